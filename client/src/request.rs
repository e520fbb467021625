//! Request builders: [`Client::get_with`], [`Client::put_with`] and
//! [`Client::delete_with`] return one of these; set what differs from the defaults and
//! `send()` it.

use std::time::Duration;

use crate::client::{Client, GetResult};
use crate::context::Context;
use crate::error::ClientError;
use crate::options::{ReadOptions, WriteOptions};

/// The option setters of a write builder (W, PW, timeout, all options), for `Put` and
/// `Delete` alike.
macro_rules! write_setters {
    ($builder:ident) => {
        /// Sets the write quorum W.
        pub fn w(mut self, w: u8) -> $builder<'a> {
            self.opts.w = Some(w);
            self
        }

        /// Sets PW, the primary acknowledgements required among W.
        pub fn pw(mut self, pw: u8) -> $builder<'a> {
            self.opts.pw = Some(pw);
            self
        }

        /// Sets the request timeout.
        pub fn timeout(mut self, timeout: Duration) -> $builder<'a> {
            self.opts.timeout = Some(timeout);
            self
        }

        /// Replaces every option at once.
        pub fn options(mut self, opts: WriteOptions) -> $builder<'a> {
            self.opts = opts;
            self
        }
    };
}

/// A read being set up: `client.get_with(key).r(3).send().await`.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct Get<'a> {
    client: &'a Client,
    key: Vec<u8>,
    opts: ReadOptions,
}

impl<'a> Get<'a> {
    pub(crate) fn new(client: &'a Client, key: Vec<u8>) -> Get<'a> {
        Get {
            client,
            key,
            opts: ReadOptions::default(),
        }
    }

    /// Sets the read quorum R.
    pub fn r(mut self, r: u8) -> Get<'a> {
        self.opts.r = Some(r);
        self
    }

    /// Sets PR, the primary replies required among R.
    pub fn pr(mut self, pr: u8) -> Get<'a> {
        self.opts.pr = Some(pr);
        self
    }

    /// Sets the request timeout.
    pub fn timeout(mut self, timeout: Duration) -> Get<'a> {
        self.opts.timeout = Some(timeout);
        self
    }

    /// Replaces every option at once.
    pub fn options(mut self, opts: ReadOptions) -> Get<'a> {
        self.opts = opts;
        self
    }

    /// Sends the read.
    pub async fn send(self) -> Result<GetResult, ClientError> {
        self.client.get_opts(&self.key, self.opts).await
    }
}

/// A write being set up: `client.put_with(key, value).context(&ctx).w(2).send().await`.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct Put<'a> {
    client: &'a Client,
    key: Vec<u8>,
    value: Vec<u8>,
    context: Option<&'a Context>,
    opts: WriteOptions,
}

impl<'a> Put<'a> {
    pub(crate) fn new(client: &'a Client, key: Vec<u8>, value: Vec<u8>) -> Put<'a> {
        Put {
            client,
            key,
            value,
            context: None,
            opts: WriteOptions::default(),
        }
    }

    /// The context of a read of the key (or of the previous write): the write replaces
    /// exactly the values it covers. Without one the value is added as a sibling. Takes
    /// `&ctx`, `Some(&ctx)` or `None`.
    pub fn context(mut self, context: impl Into<Option<&'a Context>>) -> Put<'a> {
        self.context = context.into();
        self
    }

    write_setters!(Put);

    /// Sends the write; returns its context.
    pub async fn send(self) -> Result<Context, ClientError> {
        self.client
            .put_opts(&self.key, self.value, self.context, self.opts)
            .await
    }
}

/// A delete being set up: `client.delete_with(key).context(&ctx).send().await`.
#[derive(Debug)]
#[must_use = "a request does nothing until it is sent"]
pub struct Delete<'a> {
    client: &'a Client,
    key: Vec<u8>,
    context: Option<&'a Context>,
    opts: WriteOptions,
}

impl<'a> Delete<'a> {
    pub(crate) fn new(client: &'a Client, key: Vec<u8>) -> Delete<'a> {
        Delete {
            client,
            key,
            context: None,
            opts: WriteOptions::default(),
        }
    }

    /// The context of a read of the key: the delete replaces exactly the values it covers.
    /// Without one the coordinator reads the key first (see [`Client::delete`]).
    pub fn context(mut self, context: impl Into<Option<&'a Context>>) -> Delete<'a> {
        self.context = context.into();
        self
    }

    write_setters!(Delete);

    /// Sends the delete; returns its context.
    pub async fn send(self) -> Result<Context, ClientError> {
        self.client
            .delete_opts(&self.key, self.context, self.opts)
            .await
    }
}
