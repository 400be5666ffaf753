//! Per-process state. The configuration is frozen in the main process at mod_init (before
//! fork); each worker builds its own Authorizer and HTTP agent on first use, after the fork,
//! so no connection or thread ever crosses a fork.

use std::sync::{Arc, Mutex};

use once_cell::sync::OnceCell;

use crate::core::authorize::{Authorizer, Outcome, SharedState};
use crate::core::config::Config;
use crate::core::sso::HttpSso;

static CONFIG: OnceCell<Config> = OnceCell::new();

/// Tables every process shares (mapped at mod_init, before fork).
static SHARED: OnceCell<Arc<SharedState>> = OnceCell::new();

/// This process's engine; `None` until the first request in this process.
static WORKER: Mutex<Option<Worker>> = Mutex::new(None);

/// A header that carried the deciding credentials: where it is, for sso_consume_credentials.
#[derive(Clone, Copy)]
pub struct Span {
    pub offset: u32,
    pub len: u32,
    pub kind: i32,
}

/// The headers sso_consume_credentials removes: one or two, kept inline.
pub type Spans = smallvec::SmallVec<[Span; 4]>;

/// Which message an authorization belongs to: OpenSIPS's per-process message id, plus a
/// hash of Call-ID and CSeq so that a failure route running on another request with a
/// colliding id cannot see this one's identity.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MsgKey {
    pub id: u32,
    pub dialog: u64,
}

/// The last authorization decided in this process, tied to its message.
pub struct LastAuth {
    pub key: MsgKey,
    pub outcome: Outcome,
    pub spans: Spans,
    pub consumed: bool,
    /// Texts handed out as `$sso(...)` values: OpenSIPS reads them after the getter returns,
    /// so they stay here until the next authorization in this process.
    pub var_texts: Vec<Box<str>>,
}

/// At most this many `$sso` texts are kept per request (a script reading in a loop must not
/// grow memory); the oldest are reused first.
const MAX_VAR_TEXTS: usize = 64;

impl LastAuth {
    pub fn new(key: MsgKey, outcome: Outcome, spans: Spans) -> LastAuth {
        LastAuth {
            key,
            outcome,
            spans,
            consumed: false,
            var_texts: Vec::new(),
        }
    }

    /// Keeps `text` alive and returns where it lives.
    pub fn keep_text(&mut self, text: String) -> &str {
        if self.var_texts.len() >= MAX_VAR_TEXTS {
            self.var_texts.remove(0);
        }
        self.var_texts.push(text.into_boxed_str());
        self.var_texts.last().expect("just pushed")
    }
}

pub struct Worker {
    pub authorizer: Authorizer,
    pub sso: HttpSso,
    pub last: Option<LastAuth>,
}

impl Worker {
    /// The last outcome if it belongs to message `key`.
    pub fn last_for(&self, key: MsgKey) -> Option<&LastAuth> {
        self.last.as_ref().filter(|l| l.key == key)
    }
}

/// Freezes the configuration and maps the shared tables (main process, mod_init).
pub fn freeze(cfg: Config) -> Result<&'static SharedState, String> {
    let shared = SharedState::new(&cfg).map_err(|e| format!("cannot map shared memory: {e}"))?;
    SHARED
        .set(Arc::new(shared))
        .map_err(|_| "already initialized".to_string())?;
    CONFIG
        .set(cfg)
        .map_err(|_| "configuration already frozen".to_string())?;
    Ok(SHARED.get().expect("just set"))
}

/// The shared state, once mod_init ran.
pub fn shared() -> Option<&'static SharedState> {
    SHARED.get().map(|a| a.as_ref())
}

pub fn config() -> Option<&'static Config> {
    CONFIG.get()
}

/// Runs `f` with this process's worker state, creating it on first use.
pub fn with_worker<R>(f: impl FnOnce(&mut Worker) -> R) -> Result<R, String> {
    let mut slot = WORKER.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        let cfg = config().ok_or("module not initialized")?.clone();
        let shared = SHARED.get().ok_or("module not initialized")?.clone();
        // Host names come from the resolver process's shared table: a worker never waits
        // on DNS.
        let sso = HttpSso::with_jwks_url(cfg.sso_settings(), cfg.jwks_url.as_deref())
            .map_err(|e| format!("cannot build the SSO client: {e:?}"))?
            .with_resolver(super::resolver::sso_resolver());
        let mut authorizer = Authorizer::new(cfg.clone(), shared);
        if let Some(cluster) = super::cachedb::cluster_for(&cfg)? {
            authorizer.set_cluster(cluster);
        }
        *slot = Some(Worker {
            authorizer,
            sso,
            last: None,
        });
    }
    Ok(f(slot.as_mut().expect("worker state was just created")))
}
