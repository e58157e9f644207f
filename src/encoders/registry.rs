//! The two encoder pairs CACE-Net is used with, and loading them from a weights folder.
//!
//! `--weights DIR` is a folder holding the PyTorch files users already have, under fixed names:
//!
//! | pair (`--encoders`) | file | what it is | output per second |
//! |---|---|---|---|
//! | `vgg` | `vgg19.pth` | torchvision VGG19 ImageNet state dict (`vgg19-dcbbd1f0.pth`) | `pool5` `[7,7,512]` |
//! | `vgg` | `vggish.pth` | the `torchvggish` port's state dict (`vggish-10086976.pth`) | `[128]` |
//! | `resnet-cnn14` | `resnet50.pth` | torchvision ResNet50 IMAGENET1K_V2 (`resnet50-11ad3fa6.pth`) | `layer4` `[7,7,2048]` |
//! | `resnet-cnn14` | `cnn14.pth` | PANNs `Cnn14_mAP=0.431.pth` (dict with the state dict under `model`) | `[2048]` |
//! | `vgg19bn-vggish` | `vgg19_bn.pth` | torchvision VGG19-BN ImageNet (`vgg19_bn-c79401a0.pth`), or `cace finetune --encoder vgg19-bn`'s | `[7,7,512]` |
//! | `vgg19bn-vggish` | `vggish.pth` | as for `vgg` | `[128]` |
//!
//! `vgg` gives the standard AVE features (`[N,10,7,7,512]` + `[N,10,128]`), `resnet-cnn14` the
//! paper's "efficient encoders" (`[N,10,7,7,2048]` + `[N,10,2048]`), `vgg19bn-vggish` the VGG19
//! rows of Table S5 (the network the published fine-tuning code trains). A fine-tuned
//! `resnet50.pth` (`cace finetune --encoder resnet50`) is read by `resnet-cnn14` as it is.

use std::path::Path;

use anyhow::{Result, bail};
use burn::tensor::Device;
use serde::Serialize;

use super::{AudioEncoder, FrameEncoder};

/// An encoder pair: one network for frames, one for audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EncoderKind {
    /// VGG19 `pool5` maps + VGGish embeddings (the standard AVE features).
    #[value(name = "vgg")]
    Vgg,
    /// ResNet50 `layer4` maps + PANNs Cnn14 embeddings (the paper's efficient encoders).
    #[value(name = "resnet-cnn14")]
    ResnetCnn14,
    /// VGG19-BN `features` maps + VGGish embeddings (Table S5's VGG19 rows, fine-tunable).
    #[value(name = "vgg19bn-vggish")]
    Vgg19BnVggish,
}

/// Where users get each weight file (shown when one is missing).
const SOURCES: [(&str, &str); 5] = [
    (
        "vgg19_bn.pth",
        "torchvision's VGG19-BN ImageNet weights: https://download.pytorch.org/models/vgg19_bn-c79401a0.pth, or the output of cace finetune --encoder vgg19-bn",
    ),
    (
        "vgg19.pth",
        "torchvision's VGG19 ImageNet weights: https://download.pytorch.org/models/vgg19-dcbbd1f0.pth",
    ),
    (
        "vggish.pth",
        "the torchvggish port's VGGish weights: https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth",
    ),
    (
        "resnet50.pth",
        "torchvision's ResNet50 IMAGENET1K_V2 weights: https://download.pytorch.org/models/resnet50-11ad3fa6.pth",
    ),
    (
        "cnn14.pth",
        "the PANNs checkpoint Cnn14_mAP=0.431.pth: https://zenodo.org/record/3987831/files/Cnn14_mAP%3D0.431.pth",
    ),
];

impl EncoderKind {
    /// The value `--encoders` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            EncoderKind::Vgg => "vgg",
            EncoderKind::ResnetCnn14 => "resnet-cnn14",
            EncoderKind::Vgg19BnVggish => "vgg19bn-vggish",
        }
    }

    /// Weight file names in the weights folder: `(frame encoder, audio encoder)`.
    pub fn files(self) -> (&'static str, &'static str) {
        match self {
            EncoderKind::Vgg => ("vgg19.pth", "vggish.pth"),
            EncoderKind::ResnetCnn14 => ("resnet50.pth", "cnn14.pth"),
            EncoderKind::Vgg19BnVggish => ("vgg19_bn.pth", "vggish.pth"),
        }
    }

    /// Network names: `(frame encoder, audio encoder)`, as [`FrameEncoder::name`] /
    /// [`AudioEncoder::name`] report them.
    pub fn names(self) -> (&'static str, &'static str) {
        match self {
            EncoderKind::Vgg => ("vgg19", "vggish"),
            EncoderKind::ResnetCnn14 => ("resnet50", "cnn14"),
            EncoderKind::Vgg19BnVggish => ("vgg19_bn", "vggish"),
        }
    }

    /// Channels of the visual map and width of the audio embedding.
    pub fn dims(self) -> (usize, usize) {
        match self {
            EncoderKind::Vgg | EncoderKind::Vgg19BnVggish => (512, 128),
            EncoderKind::ResnetCnn14 => (2048, 2048),
        }
    }

    /// Sample rate the audio encoder expects.
    pub fn sample_rate(self) -> u32 {
        match self {
            EncoderKind::Vgg | EncoderKind::Vgg19BnVggish => 16_000,
            EncoderKind::ResnetCnn14 => 32_000,
        }
    }
}

impl std::fmt::Display for EncoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a weight file comes from, for error messages.
pub fn source_of(file: &str) -> &'static str {
    SOURCES
        .iter()
        .find(|(f, _)| *f == file)
        .map_or("see the README", |(_, s)| s)
}

/// Checks that both weight files of `kind` are in `weights_dir`; the error names the first
/// missing file and where to get it.
pub fn check_weights(kind: EncoderKind, weights_dir: &Path) -> Result<()> {
    if !weights_dir.is_dir() {
        bail!(
            "weights folder {}: not found (it should hold {} and {})",
            weights_dir.display(),
            kind.files().0,
            kind.files().1
        );
    }
    let (frame_file, audio_file) = kind.files();
    for file in [frame_file, audio_file] {
        let path = weights_dir.join(file);
        if !path.is_file() {
            bail!(
                "{}: missing; --encoders {kind} needs {file} in the weights folder ({})",
                path.display(),
                source_of(file)
            );
        }
    }
    Ok(())
}

/// Loads the encoder pair `kind` from `weights_dir` onto `device`.
pub fn load_encoders(
    kind: EncoderKind,
    weights_dir: &Path,
    device: &Device,
) -> Result<(Box<dyn FrameEncoder>, Box<dyn AudioEncoder>)> {
    check_weights(kind, weights_dir)?;
    let (frame_file, audio_file) = kind.files();
    let (frame_path, audio_path) = (weights_dir.join(frame_file), weights_dir.join(audio_file));
    Ok(match kind {
        EncoderKind::Vgg => (
            Box::new(super::vgg19::load(&frame_path, device)?),
            Box::new(super::vggish::load(&audio_path, device)?),
        ),
        // `pooled: false` keeps the [7, 7, 2048] map the model needs.
        EncoderKind::ResnetCnn14 => (
            Box::new(super::resnet50::load(&frame_path, device, false)?),
            Box::new(super::cnn14::load(&audio_path, device)?),
        ),
        EncoderKind::Vgg19BnVggish => (
            Box::new(super::vgg19bn::load(&frame_path, device)?),
            Box::new(super::vggish::load(&audio_path, device)?),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_weight_file_is_named_with_its_source() {
        let dir = std::env::temp_dir().join(format!("cace-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vgg19.pth"), b"x").unwrap();
        let e = check_weights(EncoderKind::Vgg, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("vggish.pth: missing"), "{e}");
        assert!(e.contains("vggish-10086976.pth"), "{e}");
        let e = check_weights(EncoderKind::ResnetCnn14, &dir)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resnet50.pth: missing"), "{e}");
        let e = check_weights(EncoderKind::Vgg, &dir.join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope: not found"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
