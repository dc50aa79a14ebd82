//! Servers on loopback that Stageworks' tests and benches deliver to, each
//! recording what it took: [`SmtpSink`], a plain SMTP server, and
//! [`Receiver`], an HTTP server answering from a script; and
//! [`PushSubscriber`], a browser's side of Web Push. The servers can be
//! stopped and started again on the same port, to play a provider that is
//! down and comes back.

pub mod http;
pub mod push;
mod server;
pub mod smtp;

pub use self::http::{Received, Receiver};
pub use push::PushSubscriber;
pub use smtp::{Mail, SmtpSink};
