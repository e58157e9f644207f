//! One extraction run: list and shard the videos, resume from the staging folder, decode and
//! encode the videos still missing, assemble the files, write `extract.json`.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::assemble::assemble;
use super::staging::{Failed, RunSettings, StageWriter, Staging};
use super::{
    EncoderSettings, ExtractOptions, ExtractReport, MANIFEST_FILE, Manifest, STAGING_DIR,
    fingerprint, list_videos, path_str, read_index, read_json, select, write_file_atomic,
};
use crate::data::ave::VISUAL_FILE;
use crate::encoders::{AudioEncoder, FrameEncoder};
use crate::extract::{ClipSummary, WINDOW, encode_clip};

/// Loads the encoders (only called when some video still needs extracting).
pub type LoadEncoders<'a> =
    dyn FnMut() -> Result<(Box<dyn FrameEncoder>, Box<dyn AudioEncoder>)> + 'a;

/// Runs (or resumes) an extraction, see the module doc. Videos that fail are reported in the
/// result and `index.tsv`, never fatal; it is an error only when no video at all succeeds.
pub fn extract_dataset(opts: &ExtractOptions, load: &mut LoadEncoders) -> Result<ExtractReport> {
    let list = list_videos(&opts.videos)?;
    let selected = select(&list, opts.shard);
    if selected.is_empty() {
        bail!(
            "shard {} of {} videos is empty",
            opts.shard.map(|s| s.to_string()).unwrap_or_default(),
            list.len()
        );
    }
    let names: Vec<String> = selected.iter().map(|(_, p)| path_str(p)).collect();
    let fp = fingerprint(names.iter().map(String::as_str));
    check_out_dir(&opts.out)?;
    if let Some(done) = completed(opts, &fp)? {
        return Ok(done);
    }

    let staging = Staging {
        dir: opts.out.join(STAGING_DIR),
    };
    let mut run = open_run(opts, &staging)?;
    let mut jobs: Vec<(&str, &Path)> = Vec::new();
    for (name, (_, path)) in names.iter().zip(&selected) {
        if staging.status(name)?.is_none() {
            jobs.push((name.as_str(), path.as_path()));
        }
    }
    let mut report = ExtractReport {
        out: opts.out.clone(),
        videos: selected.len(),
        resumed: selected.len() - jobs.len(),
        ..Default::default()
    };
    if !jobs.is_empty() {
        let (frames, audio) = load()?;
        let (frames, audio) = (frames.as_ref(), audio.as_ref());
        let settings = record_encoders(opts, &staging, &mut run, frames, audio)?;
        report.extracted_now =
            stage_videos(&jobs, &staging, &settings, frames, audio, opts.progress)?;
    }
    let Some(settings) = run.encoder else {
        bail!(
            "{}: staging has no encoder settings; delete the folder and rerun",
            opts.out.display()
        );
    };
    assemble(opts, &selected, &names, &staging, &settings, &mut report)?;
    Manifest {
        encoders: opts.encoders.clone(),
        encoder: settings,
        videos_source: path_str(&opts.videos),
        list_len: list.len(),
        shard: opts.shard,
        videos: selected.len(),
        rows: report.rows,
        failed: report.failed.len(),
        videos_fingerprint: fp,
    }
    .write(&opts.out)?;
    fs::remove_dir_all(&staging.dir)
        .with_context(|| format!("removing {}", staging.dir.display()))?;
    Ok(report)
}

/// Refuses to write into a directory holding something else.
pub(super) fn check_out_dir(out: &Path) -> Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("{}: exists and is not a folder", out.display());
    }
    if out.join(VISUAL_FILE).exists()
        && !out.join(MANIFEST_FILE).exists()
        && !out.join(STAGING_DIR).exists()
    {
        bail!(
            "{}: holds an AVE dataset not written by cace extract; choose another --out",
            out.display()
        );
    }
    Ok(())
}

/// The report of an already complete `opts.out` with the same videos and settings, or an error
/// if it holds another extraction; `None` if it is not complete.
fn completed(opts: &ExtractOptions, fp: &str) -> Result<Option<ExtractReport>> {
    let path = opts.out.join(MANIFEST_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let m: Manifest = read_json(&path)?;
    if m.videos_fingerprint != fp || m.encoders != opts.encoders || m.shard != opts.shard {
        bail!(
            "{}: already holds a finished extraction of other videos or encoders ({}, {} videos); choose another --out",
            opts.out.display(),
            m.encoders,
            m.videos
        );
    }
    Ok(Some(ExtractReport {
        out: opts.out.clone(),
        videos: m.videos,
        rows: m.rows,
        failed: read_index(&opts.out)?
            .into_iter()
            .filter_map(|e| e.error.map(|err| (e.video, err)))
            .collect(),
        already_complete: true,
        ..Default::default()
    }))
}

/// Creates the staging folder, or checks that an interrupted run staged there used the same
/// settings; removes temporary files a killed run left.
fn open_run(opts: &ExtractOptions, staging: &Staging) -> Result<RunSettings> {
    fs::create_dir_all(&staging.dir)
        .with_context(|| format!("creating {}", staging.dir.display()))?;
    staging.clean()?;
    let path = staging.run_file();
    if path.exists() {
        let r: RunSettings = read_json(&path)?;
        if r.encoders != opts.encoders || r.shard != opts.shard {
            bail!(
                "{}: an interrupted run with --encoders {}{} is staged here; rerun with the same settings or choose another --out",
                opts.out.display(),
                r.encoders,
                r.shard.map(|s| format!(" --shard {s}")).unwrap_or_default()
            );
        }
        return Ok(r);
    }
    let r = RunSettings {
        encoders: opts.encoders.clone(),
        shard: opts.shard,
        encoder: None,
    };
    write_file_atomic(&path, &serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}

/// The loaded encoders' settings, recorded in `run.json` by the first run; a restart must
/// load encoders that give the same.
fn record_encoders(
    opts: &ExtractOptions,
    staging: &Staging,
    run: &mut RunSettings,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
) -> Result<EncoderSettings> {
    let settings = EncoderSettings::of(frames, audio)?;
    match &run.encoder {
        None => {
            run.encoder = Some(settings.clone());
            write_file_atomic(&staging.run_file(), &serde_json::to_vec_pretty(&run)?)?;
        }
        Some(staged) if *staged != settings => bail!(
            "{}: the staged videos were extracted with {staged:?}, the encoders now give {settings:?}; rerun with the same encoders or choose another --out",
            opts.out.display()
        ),
        Some(_) => {}
    }
    Ok(settings)
}

/// Decodes and encodes `jobs` (`(name, path)`) into the staging folder, one atomic file each;
/// a video that fails gets a `.failed` note. Returns how many were handled.
fn stage_videos(
    jobs: &[(&str, &Path)],
    staging: &Staging,
    settings: &EncoderSettings,
    frames: &dyn FrameEncoder,
    audio: &dyn AudioEncoder,
    progress: bool,
) -> Result<usize> {
    let bar = progress_bar(jobs.len(), progress);
    let visual_len: usize = settings.visual_shape.iter().product();
    for &(name, path) in jobs {
        bar.set_message(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        let mut writer = StageWriter::create(
            staging.feat(name),
            WINDOW * visual_len,
            WINDOW * settings.audio_dim,
        )?;
        match encode_clip(path, frames, audio, &mut |w| writer.push(&w)) {
            Ok(summary) => {
                warn_if_frames_end_early(&bar, path, &summary);
                writer.finish(name)?
            }
            Err(e) => {
                writer.discard();
                let error = format!("{e:#}");
                bar.suspend(|| eprintln!("skipped: {error}"));
                let note = Failed {
                    video: name.to_string(),
                    error,
                };
                write_file_atomic(&staging.failed(name), &serde_json::to_vec(&note)?)?;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(jobs.len())
}

fn progress_bar(videos: usize, shown: bool) -> ProgressBar {
    let bar = if shown {
        ProgressBar::new(videos as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} videos  {elapsed}<{eta}  {msg}")
            .unwrap(),
    );
    bar
}

fn warn_if_frames_end_early(bar: &ProgressBar, path: &Path, summary: &ClipSummary) {
    if let Some(t) = summary.frames_end_early {
        bar.suspend(|| {
            eprintln!(
                "warning: {}: the video frames end at {t:.2} s although the file \
                 declares {:.2} s; the last frame is repeated after that",
                path.display(),
                summary.info.duration
            )
        });
    }
}
