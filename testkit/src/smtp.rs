//! An SMTP server that accepts every message and keeps it: enough of
//! RFC 5321 for a real client (lettre) to deliver to it — EHLO, AUTH PLAIN
//! (any credentials), MAIL, RCPT, DATA with dot-unstuffing, RSET, NOOP,
//! QUIT, several messages per session. No TLS: the tests that need
//! STARTTLS are the provider's own.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::server::{accept_loop, Listening, Recorded, Serve};

/// A message the sink took.
#[derive(Clone, Debug)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent after DATA (headers, blank line, body), CRLFs
    /// kept, dot-unstuffed.
    pub data: String,
    pub at: Instant,
}

impl Mail {
    /// The first header of that name (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or_default();
        let mut found: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(value) = found.as_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
                continue;
            }
            if found.is_some() {
                break;
            }
            if let Some((key, value)) = line.split_once(':') {
                if key.eq_ignore_ascii_case(name) {
                    found = Some(value.trim().to_owned());
                }
            }
        }
        found
    }

    /// What follows the headers.
    pub fn body(&self) -> &str {
        self.data
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body)
    }
}

/// The sink: [`SmtpSink::start`] binds a free loopback port; dropping it
/// or [`SmtpSink::stop`] closes the listener and every session.
pub struct SmtpSink {
    listening: Listening,
    mails: Arc<Recorded<Mail>>,
    /// How long the 250 after DATA waits ([`SmtpSink::with_data_reply_delay`]).
    data_reply_delay: Arc<Mutex<Duration>>,
}

impl SmtpSink {
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().expect("a socket address")).await
    }

    /// On a given address: a sink [`SmtpSink::stop`]ped and started again
    /// on its port is the same server coming back (what it took is kept).
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let mails: Arc<Recorded<Mail>> = Arc::default();
        let data_reply_delay: Arc<Mutex<Duration>> = Arc::default();
        let (shared, delay) = (mails.clone(), data_reply_delay.clone());
        let serve: Serve = Box::new(move |listener| {
            let (mails, delay) = (shared.clone(), delay.clone());
            Box::pin(accept_loop(listener, move |stream| {
                let (mails, delay) = (mails.clone(), delay.clone());
                async move {
                    // A client that goes away mid-session is not the sink's problem.
                    let _ = session(stream, &mails, &delay).await;
                }
            }))
        });
        Ok(SmtpSink {
            listening: Listening::bind(addr, serve).await?,
            mails,
            data_reply_delay,
        })
    }

    /// Stops listening and drops every open session: the server is down.
    pub fn stop(&mut self) {
        self.listening.stop();
    }

    /// Listens again on the same port.
    pub async fn resume(&mut self) -> std::io::Result<()> {
        self.listening.resume().await
    }

    /// Makes the sink slow to confirm a message: it keeps each message as
    /// soon as the message ends, then waits `delay` before its `250` reply.
    /// A client killed in that window had its message taken without
    /// hearing so (what a crash mid-send looks like to the server).
    /// No delay by default; once set it holds for every message that ends
    /// after, in open sessions too, and across [`SmtpSink::stop`] and
    /// [`SmtpSink::resume`].
    pub fn with_data_reply_delay(self, delay: Duration) -> Self {
        *self.data_reply_delay.lock().expect("not poisoned") = delay;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.listening.addr()
    }

    pub fn port(&self) -> u16 {
        self.addr().port()
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.all()
    }

    pub fn count(&self) -> usize {
        self.mails.count()
    }

    /// Waits until at least `n` messages arrived, or `within` passed;
    /// answers what arrived either way.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        self.mails.wait_for(n, within).await
    }
}

/// The envelope being built in a session.
#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn session(
    stream: TcpStream,
    mails: &Recorded<Mail>,
    data_reply_delay: &Mutex<Duration>,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP ready\r\n").await?;
    let mut envelope = Envelope::default();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end();
        let verb = command
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250 AUTH PLAIN\r\n",
            "HELO" => b"250 sink\r\n",
            "AUTH" => b"235 2.7.0 accepted\r\n",
            "MAIL" => {
                envelope = Envelope {
                    from: Some(address_of(command)),
                    to: Vec::new(),
                };
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" if envelope.from.is_some() => {
                envelope.to.push(address_of(command));
                b"250 2.1.5 ok\r\n"
            }
            "RCPT" => b"503 5.5.1 MAIL first\r\n",
            "DATA" if envelope.to.is_empty() => b"503 5.5.1 RCPT first\r\n",
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let data = read_data(&mut lines).await?;
                let taken = std::mem::take(&mut envelope);
                mails.push(Mail {
                    from: taken.from.unwrap_or_default(),
                    to: taken.to,
                    data,
                    at: Instant::now(),
                });
                let delay = *data_reply_delay.lock().expect("not poisoned");
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                b"250 2.0.0 queued\r\n"
            }
            "RSET" => {
                envelope = Envelope::default();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}

/// The address between `<` and `>` of a MAIL or RCPT command.
fn address_of(command: &str) -> String {
    let start = command.find('<').map_or(0, |i| i + 1);
    let end = command[start..]
        .find('>')
        .map_or(command.len(), |i| start + i);
    command[start..end].to_owned()
}

/// The lines after DATA up to the lone `.`, dot-unstuffed.
async fn read_data<R: tokio::io::AsyncBufRead + Unpin>(lines: &mut R) -> std::io::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if line == ".\r\n" || line == ".\n" {
            return Ok(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}
