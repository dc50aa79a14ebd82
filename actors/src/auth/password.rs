//! Password hashing: argon2id at OWASP's recommended cost (m = 19456 KiB,
//! t = 2, p = 1), stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$…`)
//! so the parameters travel with each hash and can be raised later
//! ([`needs_rehash`]).
//!
//! Hashing takes tens of milliseconds of CPU and 19 MiB of memory, so it runs
//! on threads of its own, never on a runtime thread: one per core, so a
//! burst of logins does not ask for hundreds of 19 MiB blocks at once, each
//! at a lower CPU priority ([`NICENESS`]), so that hashing takes the CPU the
//! rest of the API leaves idle and yields it whenever a request needs it.
//! The queue in front of them is bounded ([`MAX_WAITING`] per core): a hash
//! that finds it full is refused at once ([`PasswordError::Busy`], a 503
//! with `retry-after`), so a login flood sheds logins within a few hashes'
//! time instead of making every caller wait out its timeout.
//!
//! [`verify_dummy`] runs the same verification against a fixed hash, so a
//! login for an unknown email costs what a wrong password costs and the
//! answer's timing does not tell which accounts exist.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use super::model::Password;

/// Memory cost in KiB (19 MiB), OWASP's first recommended argon2id setting.
pub const M_COST_KIB: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;
const OUTPUT_LEN: usize = 32;
const SALT_LEN: usize = 16;

/// A well-formed hash with the parameters above (its output is arbitrary: no
/// known password produces it); what unknown emails are verified against. The test
/// `dummy_hash_uses_the_current_parameters` keeps it in step with them.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$ZHVtbXktc2FsdC0wMDAwMA$bcUbf4o2oZQ/zxh9KFx4k8WNF/VgqRFB4lvTGaVbjDI";

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("stored password hash is not a valid PHC string: {0}")]
    CorruptHash(String),
    #[error("no randomness for the salt: {0}")]
    Random(String),
    #[error("the hashing task failed: {0}")]
    Task(String),
    /// Every core is hashing and the queue is full: try again shortly.
    #[error("too many passwords are being checked at once")]
    Busy,
}

/// How many hashes may wait per core: eight hashes of ~25 ms is a fifth of
/// a second of queue, far inside any caller's timeout.
pub const MAX_WAITING: usize = 8;

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get)
}

/// Hashes running or waiting for a core, at most `cores × (1 + MAX_WAITING)`.
static ADMITTED: LazyLock<Semaphore> =
    LazyLock::new(|| Semaphore::new(cores() * (1 + MAX_WAITING)));

/// The hashing threads' nice value: 10 gives a runtime thread (nice 0) about
/// nine times their share of a contended core (Linux's CFS weights), so a
/// login flood costs the other routes little latency, while on an idle
/// machine hashing still runs at full speed.
pub const NICENESS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads, started at first use. `Err`: they could not be
/// started (the environment refused a thread), said on every hash.
static POOL: LazyLock<Result<Sender<Job>, String>> = LazyLock::new(start_pool);

fn start_pool() -> Result<Sender<Job>, String> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for i in 0..cores() {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("password-hash-{i}"))
            .spawn(move || hashing_thread(&queue))
            .map_err(|e| format!("cannot start a password hashing thread: {e}"))?;
    }
    Ok(jobs)
}

fn hashing_thread(queue: &Mutex<Receiver<Job>>) {
    // On Linux the nice value is per thread: this lowers this one only. A
    // refusal (a sandbox without setpriority) leaves it at normal priority.
    if let Err(err) = rustix::process::setpriority_process(None, NICENESS) {
        tracing::warn!(error = %err, "password hashing runs at normal CPU priority");
    }
    loop {
        // The lock is held only while waiting for the next job, not while
        // hashing, so the threads take jobs one after another.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            // A panicking hash drops its reply (its caller sees the error)
            // and must not take the thread with it.
            Ok(job) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
            Err(_) => return, // the sender is gone: the process is exiting
        }
    }
}

fn hasher() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, Some(OUTPUT_LEN))
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Runs `work` on a hashing thread, if the queue has room for it.
async fn on_hashing_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let _admitted = ADMITTED.try_acquire().map_err(|_| {
        metrics::counter!("password_hashes_shed_total").increment(1);
        PasswordError::Busy
    })?;
    let jobs = POOL.as_ref().map_err(|e| PasswordError::Task(e.clone()))?;
    let (done, result) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        // The caller may have gone (its request timed out): nobody to tell.
        let _ = done.send(work());
    });
    jobs.send(job)
        .map_err(|_| PasswordError::Task("the hashing threads have stopped".into()))?;
    result
        .await
        .map_err(|_| PasswordError::Task("a hashing thread panicked".into()))?
}

/// Hashes a new password into a PHC string with a fresh random salt.
pub async fn hash(password: Password) -> Result<String, PasswordError> {
    on_hashing_thread(move || hash_now(&password)).await
}

fn hash_now(password: &Password) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).map_err(|e| PasswordError::Random(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let hash = hasher()?
        .hash_password(password.expose().as_bytes(), &salt)
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    Ok(hash.to_string())
}

/// Whether `password` matches the stored PHC string (with the parameters
/// the string carries, so older hashes still verify).
pub async fn verify(password: Password, stored: String) -> Result<bool, PasswordError> {
    on_hashing_thread(move || verify_now(&password, &stored)).await
}

/// The same work as [`verify`] for an email that has no account; always false.
pub async fn verify_dummy(password: Password) -> Result<bool, PasswordError> {
    on_hashing_thread(move || verify_now(&password, DUMMY_HASH).map(|_| false)).await
}

fn verify_now(password: &Password, stored: &str) -> Result<bool, PasswordError> {
    let parsed =
        PasswordHash::new(stored).map_err(|e| PasswordError::CorruptHash(e.to_string()))?;
    // Without them the library answers "wrong password": a corrupt row would
    // pass for a failed login instead of showing up as the bug it is.
    if parsed.salt.is_none() || parsed.hash.is_none() {
        return Err(PasswordError::CorruptHash("no salt or no output".into()));
    }
    match hasher()?.verify_password(password.expose().as_bytes(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(other) => Err(PasswordError::CorruptHash(other.to_string())),
    }
}

/// Whether a stored hash was made with other parameters than today's (an
/// older, cheaper setting): the login that just verified it should store a
/// new hash.
pub fn needs_rehash(stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || parsed.version != Some(Version::V0x13.into())
        || params.m_cost() != M_COST_KIB
        || params.t_cost() != T_COST
        || params.p_cost() != P_COST
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::presented(s).expect("within bounds")
    }

    #[tokio::test]
    async fn hashes_verify_and_wrong_passwords_do_not() {
        let stored = hash(pw("correct horse battery staple"))
            .await
            .expect("hashes");
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
        assert!(!stored.contains("horse"));
        assert!(verify(pw("correct horse battery staple"), stored.clone())
            .await
            .expect("verifies"));
        assert!(!verify(pw("Correct horse battery staple"), stored.clone())
            .await
            .expect("verifies"));
        assert!(!needs_rehash(&stored));
    }

    #[tokio::test]
    async fn salts_differ() {
        let a = hash(pw("same password here")).await.expect("hashes");
        let b = hash(pw("same password here")).await.expect("hashes");
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn the_dummy_never_matches() {
        assert!(!verify_dummy(pw("")).await.expect("verifies"));
        assert!(!verify_dummy(pw("dummy")).await.expect("verifies"));
    }

    #[test]
    fn dummy_hash_uses_the_current_parameters() {
        assert!(!needs_rehash(DUMMY_HASH), "regenerate DUMMY_HASH");
    }

    #[test]
    fn older_parameters_need_a_rehash() {
        let argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).expect("valid params"),
        );
        let salt = SaltString::encode_b64(b"0123456789abcdef").expect("salt");
        let cheap = argon2
            .hash_password(b"password", &salt)
            .expect("hashes")
            .to_string();
        assert!(needs_rehash(&cheap));
        assert!(needs_rehash("not a phc string"));
        // Old hashes still verify with the parameters they carry.
        assert!(verify_now(&pw("password"), &cheap).expect("verifies"));
    }

    #[test]
    fn a_corrupt_stored_hash_is_an_error() {
        assert!(matches!(
            verify_now(&pw("x"), "$argon2id$garbage"),
            Err(PasswordError::CorruptHash(_))
        ));
    }
}
