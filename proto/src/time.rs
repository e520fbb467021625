//! Time as the state machines see it: values handed in by the driver, never read here.
//!
//! Two clocks, for two purposes. [`Time`] is wall-clock: it is stored (tombstones,
//! hints) and compared across nodes and restarts. [`Monotonic`] only measures elapsed
//! time within one engine's life: every timer (request deadlines, periodic work) and the
//! failure detector's intervals use it, so that a wall-clock step (NTP, an operator)
//! neither fires every timer at once nor stalls them until the wall clock catches up.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time: the duration since the Unix epoch.
///
/// The node driver passes wall-clock time (clamped to never go backwards); the simulator
/// passes its virtual clock. It is stored in tombstones and hints, so it must mean the
/// same across restarts, hence wall-clock rather than a process-local monotonic instant.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Time(#[serde(with = "micros")] Duration);

impl Time {
    /// The epoch itself.
    pub const ZERO: Time = Time(Duration::ZERO);

    /// A time `since_epoch` after the Unix epoch, truncated to whole microseconds (the
    /// precision it is stored with, so that a time survives encoding unchanged).
    pub const fn from_duration(since_epoch: Duration) -> Time {
        Time(Duration::new(
            since_epoch.as_secs(),
            since_epoch.subsec_micros() * 1000,
        ))
    }

    /// A time in microseconds since the epoch.
    pub const fn from_micros(micros: u64) -> Time {
        Time(Duration::from_micros(micros))
    }

    /// The duration since the epoch.
    pub const fn since_epoch(self) -> Duration {
        self.0
    }

    /// Microseconds since the epoch (saturating).
    pub fn as_micros(self) -> u64 {
        u64::try_from(self.0.as_micros()).unwrap_or(u64::MAX)
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        self.0.saturating_sub(earlier.0)
    }
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, rhs: Duration) -> Time {
        Time::from_duration(self.0.saturating_add(rhs))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, rhs: Duration) -> Time {
        Time::from_duration(self.0.saturating_sub(rhs))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06}s", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// A point on a monotonic clock: the time since an origin the driver chose (the node
/// driver: when it started; the simulator: its virtual epoch).
///
/// Never stored or sent: it means nothing outside the engine that was handed it. It is
/// never compared with a [`Time`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Monotonic(Duration);

impl Monotonic {
    /// The driver's origin.
    pub const ZERO: Monotonic = Monotonic(Duration::ZERO);

    /// The instant `since_origin` after the driver's origin.
    pub const fn from_duration(since_origin: Duration) -> Monotonic {
        Monotonic(since_origin)
    }

    /// The instant `micros` microseconds after the driver's origin.
    pub const fn from_micros(micros: u64) -> Monotonic {
        Monotonic(Duration::from_micros(micros))
    }

    /// The duration since the driver's origin.
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// `self - earlier`, or zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Monotonic) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// For a driver with one virtual clock ([`Now::from_virtual`]): the virtual time
    /// this instant stands for.
    pub const fn as_virtual(self) -> Time {
        Time::from_duration(self.0)
    }
}

impl Add<Duration> for Monotonic {
    type Output = Monotonic;
    fn add(self, rhs: Duration) -> Monotonic {
        Monotonic(self.0.saturating_add(rhs))
    }
}

impl fmt::Debug for Monotonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}.{:06}s", self.0.as_secs(), self.0.subsec_micros())
    }
}

/// The two clocks every engine input carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Wall-clock time: what is stored and compared across nodes.
    pub wall: Time,
    /// Monotonic time: what timers and the failure detector measure intervals with.
    pub mono: Monotonic,
}

impl Now {
    /// Both clocks.
    pub const fn new(wall: Time, mono: Monotonic) -> Now {
        Now { wall, mono }
    }

    /// One virtual clock read as both, for drivers whose clock never steps (the
    /// simulator, tests, benchmarks): monotonic time counts from the Unix epoch, so
    /// [`Monotonic::as_virtual`] turns a timer back into virtual time.
    pub const fn from_virtual(t: Time) -> Now {
        Now {
            wall: t,
            mono: Monotonic(t.since_epoch()),
        }
    }
}

mod micros {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_micros(u64::deserialize(d)?))
    }
}
