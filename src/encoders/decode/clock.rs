//! Which decoded frame each sample time shows ("Frames: 16 per second, by time" in the module
//! documentation of [`super`]), apart from FFmpeg: the reader feeds it frames and their
//! timestamps, so the rule can be tested with plain numbers.
//!
//! Sample `k` is time `k / 16` s; it shows the latest frame whose time is `<= k / 16` (exact
//! integer comparison in the stream's time base), the first frame before that, the last frame
//! after the end of the stream.

use super::FRAMES_PER_SECOND;

/// A stream's time base: one tick is `num / den` seconds (FFmpeg's `AVRational`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeBase {
    pub num: i32,
    pub den: i32,
}

impl TimeBase {
    /// Whether sample time `k / 16` s is before `ticks`: `k·den < 16·ticks·num` in 128-bit
    /// integers, so no rounding can move a frame to the wrong side of a sample time.
    pub fn sample_before(self, k: u64, ticks: i64) -> bool {
        (k as i128) * (self.den as i128)
            < (FRAMES_PER_SECOND as i128) * (ticks as i128) * (self.num as i128)
    }

    fn seconds(self, ticks: i64) -> f64 {
        ticks as f64 * self.num as f64 / self.den as f64
    }
}

/// The frame a sample shows.
pub(super) enum Shown<'a, F> {
    /// The latest frame at or before the sample time.
    Held(&'a mut F),
    /// The sample time is before the first frame: the first frame stands in.
    First(&'a F),
}

/// The sampling state of one video stream, over frames of type `F`.
pub(super) struct FrameClock<F> {
    tb: TimeBase,
    /// Ticks from one frame to the next, for frames without a timestamp.
    ticks_per_frame: i64,
    /// Index `k` of the next sample time `k / 16` s.
    next: u64,
    /// Latest frame with time <= the next sample time.
    held: Option<F>,
    /// A decoded frame later than the next sample time, with its time in ticks.
    incoming: Option<(F, i64)>,
    last_ticks: Option<i64>,
    end_of_stream: bool,
    ended_early_at: Option<f64>,
}

/// What the next sample needs.
enum Step {
    /// The incoming frame is not due yet: the sample shows the held (or first) frame.
    Show,
    /// The incoming frame is due: it becomes the held frame.
    Hold,
    /// No frame is waiting: decode one.
    Decode,
    /// The stream has ended: the sample repeats the last frame.
    Repeat,
}

impl<F> FrameClock<F> {
    pub fn new(tb: TimeBase, ticks_per_frame: i64) -> Self {
        Self {
            tb,
            ticks_per_frame,
            next: 0,
            held: None,
            incoming: None,
            last_ticks: None,
            end_of_stream: false,
            ended_early_at: None,
        }
    }

    /// Index `k` of the next sample.
    pub fn next_sample(&self) -> u64 {
        self.next
    }

    /// When the frames stopped more than a second before a sample time, the time (s) of the
    /// last frame; see `VideoFrames::frames_end_early`.
    pub fn ended_early_at(&self) -> Option<f64> {
        self.ended_early_at
    }

    /// The frame of the next sample, then moves on to the sample after it. `decode` yields the
    /// stream's next frame with its time in ticks from the origin (`None` for a frame without a
    /// timestamp: one frame after the previous), or `None` at the end of the stream. `Ok(None)`:
    /// the stream had no frame at all.
    pub fn next_frame<E>(
        &mut self,
        mut decode: impl FnMut() -> Result<Option<(F, Option<i64>)>, E>,
    ) -> Result<Option<Shown<'_, F>>, E> {
        loop {
            let step = match &self.incoming {
                Some((_, ticks)) if self.tb.sample_before(self.next, *ticks) => Step::Show,
                Some(_) => Step::Hold,
                None if self.end_of_stream => Step::Repeat,
                None => Step::Decode,
            };
            match step {
                Step::Hold => self.held = self.incoming.take().map(|(frame, _)| frame),
                Step::Decode => match decode()? {
                    Some((frame, ticks)) => {
                        let ticks = ticks.unwrap_or_else(|| {
                            self.last_ticks.map_or(0, |t| t + self.ticks_per_frame)
                        });
                        self.last_ticks = Some(ticks);
                        self.incoming = Some((frame, ticks));
                    }
                    None => self.end_of_stream = true,
                },
                Step::Show => {
                    self.next += 1;
                    return Ok(Some(match &mut self.held {
                        Some(held) => Shown::Held(held),
                        None => Shown::First(&self.incoming.as_ref().expect("incoming").0),
                    }));
                }
                Step::Repeat => {
                    if self.held.is_none() {
                        return Ok(None);
                    }
                    self.note_early_end();
                    self.next += 1;
                    return Ok(self.held.as_mut().map(Shown::Held));
                }
            }
        }
    }

    /// Records the last frame's time once a sample is more than a second past it: the data
    /// ended before the duration the container declares.
    fn note_early_end(&mut self) {
        let last = self.tb.seconds(self.last_ticks.unwrap_or(0));
        if self.ended_early_at.is_none() && self.next as f64 / FRAMES_PER_SECOND as f64 > last + 1.0
        {
            self.ended_early_at = Some(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What each of `samples` samples shows: `(frame number, false for a stand-in first frame)`,
    /// for frames with the given timestamps (frame `i` has `times[i]`).
    fn pick(
        clock: &mut FrameClock<usize>,
        times: &[Option<i64>],
        samples: usize,
    ) -> Vec<(usize, bool)> {
        let mut frames = times.iter().copied().enumerate();
        let mut decode = || Ok::<_, ()>(frames.next());
        (0..samples)
            .map(|_| match clock.next_frame(&mut decode).unwrap() {
                Some(Shown::Held(f)) => (*f, true),
                Some(Shown::First(f)) => (*f, false),
                None => panic!("no frame"),
            })
            .collect()
    }

    fn frame_numbers(picks: &[(usize, bool)]) -> Vec<usize> {
        picks.iter().map(|p| p.0).collect()
    }

    /// 25 fps in a 1/12800 time base (MP4's usual): the frames of the module documentation.
    #[test]
    fn twenty_five_fps_picks_the_frame_shown_at_each_sample_time() {
        let times: Vec<Option<i64>> = (0..60).map(|i| Some(512 * i)).collect();
        let mut clock = FrameClock::new(TimeBase { num: 1, den: 12800 }, 512);
        let second0 = pick(&mut clock, &times, 16);
        assert_eq!(
            frame_numbers(&second0),
            [0, 1, 3, 4, 6, 7, 9, 10, 12, 14, 15, 17, 18, 20, 21, 23]
        );
        assert!(second0.iter().all(|p| p.1));
        // Second 1 is second 0 one second (25 frames) later.
        let second1 = pick(&mut clock, &times, 16);
        let shifted: Vec<usize> = frame_numbers(&second0).iter().map(|f| f + 25).collect();
        assert_eq!(frame_numbers(&second1), shifted);
        assert_eq!(clock.next_sample(), 32);
    }

    /// Below 16 fps frames repeat: 10 fps shows frame `floor(10·k/16)` at sample `k`.
    #[test]
    fn slow_video_repeats_frames() {
        let times: Vec<Option<i64>> = (0..20).map(Some).collect();
        let mut clock = FrameClock::new(TimeBase { num: 1, den: 10 }, 1);
        let picks = frame_numbers(&pick(&mut clock, &times, 16));
        assert_eq!(picks, [0, 0, 1, 1, 2, 3, 3, 4, 5, 5, 6, 6, 7, 8, 8, 9]);
    }

    /// A frame exactly at a sample time is shown at it; one tick later it is not.
    #[test]
    fn a_frame_at_the_sample_time_is_shown() {
        let tb = TimeBase { num: 1, den: 90000 };
        // 1/16 s = 5625 ticks.
        let times = [Some(0), Some(5625), Some(11251), Some(20000)];
        let mut clock = FrameClock::new(tb, 3600);
        assert_eq!(frame_numbers(&pick(&mut clock, &times, 3)), [0, 1, 1]);
        assert!(!tb.sample_before(1, 5625));
        assert!(tb.sample_before(1, 5626));
        assert!(tb.sample_before(2, 11251));
    }

    /// The comparison is exact where floating point is not: in a 2^-30 s time base, a frame one
    /// tick after sample `2^27` (at tick `2^53 + 1`) is later than the sample, though as an f64
    /// its tick rounds to `2^53`, the sample time itself.
    #[test]
    fn comparison_is_exact_for_huge_timestamps() {
        let tb = TimeBase {
            num: 1,
            den: 1 << 30,
        };
        let k: u64 = 1 << 27;
        let at: i64 = 1 << 53; // exactly k/16 s
        assert!(!tb.sample_before(k, at));
        assert!(tb.sample_before(k, at + 1));
        assert!(!tb.sample_before(k + 1, at + 1));
        // What a float comparison would say: the same time, so "not before".
        assert_eq!(k as f64 / 16.0, tb.seconds(at + 1));
    }

    /// Before the first frame (a stream starting at 0.1 s) the first frame stands in.
    #[test]
    fn before_the_first_frame_the_first_frame_stands_in() {
        let times: Vec<Option<i64>> = (0..10).map(|i| Some(100 + 40 * i)).collect();
        let mut clock = FrameClock::new(TimeBase { num: 1, den: 1000 }, 40);
        let picks = pick(&mut clock, &times, 4);
        assert_eq!(picks, [(0, false), (0, false), (0, true), (2, true)]);
    }

    /// After the last frame it repeats, and a sample more than a second past it marks the
    /// stream as ending early.
    #[test]
    fn after_the_last_frame_it_repeats_and_notes_the_early_end() {
        // 10 frames at 25 fps: the last at 0.36 s.
        let times: Vec<Option<i64>> = (0..10).map(|i| Some(512 * i)).collect();
        let mut clock = FrameClock::new(TimeBase { num: 1, den: 12800 }, 512);
        let picks = pick(&mut clock, &times, 22);
        assert_eq!(frame_numbers(&picks[..6]), [0, 1, 3, 4, 6, 7]);
        assert_eq!(frame_numbers(&picks[6..]), [9; 16]);
        // Sample 21 (1.3125 s) is within a second of 0.36 s; sample 22 (1.375 s) is not.
        assert_eq!(clock.ended_early_at(), None);
        pick(&mut clock, &times, 1);
        assert_eq!(clock.ended_early_at(), Some(0.36));
    }

    /// Frames without a timestamp follow the previous one by `ticks_per_frame` (the first at 0).
    #[test]
    fn frames_without_timestamps_follow_the_previous() {
        let times = [None, None, Some(2560), None, None];
        let mut clock = FrameClock::new(TimeBase { num: 1, den: 12800 }, 1024);
        // Times 0, 1024, 2560, 3584, 4608 ticks = 0, 0.08, 0.2, 0.28, 0.36 s; samples every
        // 0.0625 s.
        let picks = frame_numbers(&pick(&mut clock, &times, 7));
        assert_eq!(picks, [0, 0, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn a_stream_without_frames_has_nothing_to_show() {
        let mut clock = FrameClock::<usize>::new(TimeBase { num: 1, den: 25 }, 1);
        assert!(clock.next_frame(|| Ok::<_, ()>(None)).unwrap().is_none());
    }
}
