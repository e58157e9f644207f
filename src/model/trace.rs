//! Optional recording of intermediate activations.
//!
//! The parity tests compare every activation the official code exposes through forward hooks
//! (`act/*` in the golden file); the figure commands read attention maps. Names follow the
//! official module paths (`spatial_channel_att.video_query`, `video_encoder.encoder.layers.0`).
//! A disabled trace costs nothing: nothing is copied unless recording is on.

use burn::tensor::{Tensor, TensorData};

#[derive(Default)]
pub struct Trace {
    items: Option<Vec<(String, TensorData)>>,
}

impl Trace {
    /// A trace that records nothing.
    pub fn off() -> Self {
        Self { items: None }
    }

    /// A trace that records every named activation.
    pub fn on() -> Self {
        Self {
            items: Some(Vec::new()),
        }
    }

    pub fn is_on(&self) -> bool {
        self.items.is_some()
    }

    pub fn record<const D: usize>(&mut self, name: &str, t: &Tensor<D>) {
        if let Some(items) = self.items.as_mut() {
            items.push((name.to_string(), t.to_data()));
        }
    }

    /// Recorded activations in forward order.
    pub fn items(&self) -> &[(String, TensorData)] {
        self.items.as_deref().unwrap_or(&[])
    }

    pub fn get(&self, name: &str) -> Option<&TensorData> {
        self.items().iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }
}
