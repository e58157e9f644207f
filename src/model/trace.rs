//! Optional recording of intermediate activations.
//!
//! The parity tests compare every activation the official code exposes through forward hooks
//! (`act/*` in the golden file); the figure commands read attention maps. Names follow the
//! official module paths (`spatial_channel_att.video_query`, `video_encoder.encoder.layers.0`).
//! A disabled trace costs a branch per call: keys are `&'static str` or `(prefix, suffix)`
//! pairs joined only while recording, so nothing is allocated or copied when it is off.
//! Figures do not need it: the attention maps they draw come in [`super::CaceOutput`].

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

    /// A name built only while recording (an empty `String`, which allocates nothing, when
    /// off): for module paths with an index, `trace.name(|| format!("{name}.layers.{i}"))`.
    pub fn name(&self, f: impl FnOnce() -> String) -> String {
        if self.is_on() { f() } else { String::new() }
    }

    pub fn record<const D: usize>(&mut self, key: impl Key, t: &Tensor<D>) {
        if let Some(items) = self.items.as_mut() {
            // Copied out at once: on wgpu (cubecl-wgpu 0.11.3) the bytes of a read can alias a
            // staging buffer that a later read reuses, so a kept `TensorData` would change.
            let d = t.to_data();
            let shape = d.shape().to_vec();
            let v = d
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("float tensor");
            items.push((key.joined(), TensorData::new(v, shape)));
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

/// A trace key: a name, or a module path and a suffix joined when recorded.
pub trait Key {
    fn joined(&self) -> String;
}

impl Key for &str {
    fn joined(&self) -> String {
        (*self).to_string()
    }
}

impl Key for &String {
    fn joined(&self) -> String {
        (*self).clone()
    }
}

impl Key for (&str, &str) {
    fn joined(&self) -> String {
        format!("{}{}", self.0, self.1)
    }
}
