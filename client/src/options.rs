//! Per-request options: quorums and timeouts, with builder methods.

use std::time::Duration;

use shoal_proto::wire::{self, MAX_REQUEST_TIMEOUT, MIN_REQUEST_TIMEOUT};

use crate::error::ClientError;

/// Refuses a timeout outside the protocol's bounds
/// ([`MIN_REQUEST_TIMEOUT`]..=[`MAX_REQUEST_TIMEOUT`]) before anything is sent.
pub(crate) fn check_timeout(timeout: Option<Duration>) -> Result<(), ClientError> {
    match timeout {
        Some(t) => wire::check_timeout(t, MIN_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT)
            .map_err(ClientError::from),
        None => Ok(()),
    }
}

/// Options of a read. Every field left `None` takes the cluster's default.
///
/// ```
/// use std::time::Duration;
/// use shoal_client::ReadOptions;
/// let opts = ReadOptions::default().r(2).timeout(Duration::from_secs(1));
/// assert_eq!(opts.r, Some(2));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Replies to wait for (1..=N).
    pub r: Option<u8>,
    /// How many of those replies must come from primary replicas (0..=R).
    pub pr: Option<u8>,
    /// How long the coordinator may take before answering `Timeout`; the client waits a
    /// little longer so that answer arrives.
    pub timeout: Option<Duration>,
}

impl ReadOptions {
    /// Sets the read quorum R.
    pub fn r(mut self, r: u8) -> ReadOptions {
        self.r = Some(r);
        self
    }

    /// Sets PR, the primary replies required among R.
    pub fn pr(mut self, pr: u8) -> ReadOptions {
        self.pr = Some(pr);
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, timeout: Duration) -> ReadOptions {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn to_wire(self) -> wire::ReadOptions {
        wire::ReadOptions {
            r: self.r,
            pr: self.pr,
            timeout: self.timeout,
        }
    }
}

/// Options of a put or delete. Every field left `None` takes the cluster's default.
///
/// ```
/// use shoal_client::WriteOptions;
/// let opts = WriteOptions::default().w(3).pw(2);
/// assert_eq!((opts.w, opts.pw), (Some(3), Some(2)));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Acknowledgements to wait for, the coordinator's own included (1..=N).
    pub w: Option<u8>,
    /// How many of those must come from primary replicas rather than fallbacks (0..=W).
    pub pw: Option<u8>,
    /// How long the coordinator may take before answering `Timeout`; the client waits a
    /// little longer so that answer arrives.
    pub timeout: Option<Duration>,
}

impl WriteOptions {
    /// Sets the write quorum W.
    pub fn w(mut self, w: u8) -> WriteOptions {
        self.w = Some(w);
        self
    }

    /// Sets PW, the primary acknowledgements required among W.
    pub fn pw(mut self, pw: u8) -> WriteOptions {
        self.pw = Some(pw);
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, timeout: Duration) -> WriteOptions {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn to_wire(self) -> wire::WriteOptions {
        wire::WriteOptions {
            w: self.w,
            pw: self.pw,
            timeout: self.timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_outside_the_protocol_bounds_are_refused_before_sending() {
        for bad in [
            Duration::ZERO,
            Duration::from_micros(999),
            MAX_REQUEST_TIMEOUT + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            let err = check_timeout(Some(bad)).unwrap_err();
            assert!(
                matches!(&err, ClientError::InvalidOptions(m) if m.contains("timeout")),
                "{bad:?}: {err:?}"
            );
        }
        for good in [
            None,
            Some(MIN_REQUEST_TIMEOUT),
            Some(Duration::from_secs(5)),
            Some(MAX_REQUEST_TIMEOUT),
        ] {
            check_timeout(good).unwrap();
        }
    }
}
