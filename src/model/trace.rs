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
            // Copied out at once: on wgpu (cubecl-wgpu 0.11.3) the bytes of a read can alias a
            // staging buffer that a later read reuses, so a kept `TensorData` would change.
            let d = t.to_data();
            let shape = d.shape().to_vec();
            let v = d
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("float tensor");
            items.push((name.to_string(), TensorData::new(v, shape)));
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
