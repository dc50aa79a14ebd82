//! The email provider: SMTP submission with lettre, over implicit TLS
//! (`tls`, port 465), STARTTLS (`starttls`, port 587, the default) or neither
//! (`none`, port 25: a relay on the same host or network), with an optional
//! login (AUTH PLAIN or LOGIN).
//!
//! Each message is `From` the configured mailbox, with `Message-ID:
//! <{notification id}@{domain of from}>` so that a retried send can be told
//! apart from a new one, a text part, and an HTML alternative when there is
//! one.
//!
//! The SMTP exchange is driven step by step (lettre's connection, not its
//! transport) because what a refusal means depends on the step: a refused
//! connection, greeting, login or sender is the server's or our
//! configuration's problem, the same for every message, so it is retryable
//! (the service's circuit opens and messages wait); a 5xx to the recipient or
//! to the message itself concerns this message only, and is final. A 4xx is
//! always "try later" (greylisting, a full queue). Idle connections are kept
//! a little while for the next message, as lettre's pool would.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt, Rset};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use lettre::{Address, Message};
use serde::{Deserialize, Serialize};

use super::{
    check_common, error_chain, Channel, Common, Delivery, Provider, Secret, SendError,
    DEFAULT_PER_SECOND, DEFAULT_TIMEOUT,
};
use crate::service::SettingProblem;

/// Idle connections kept for the next messages, and for how long: servers
/// drop an idle client after a few minutes, and a connection found dead costs
/// a round trip (NOOP) to learn it.
const MAX_IDLE: usize = 4;
const IDLE_FOR: Duration = Duration::from_secs(30);

/// How the connection to the SMTP server is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain TCP upgraded with STARTTLS, which is required (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (port 25): only for a relay on a trusted network.
    None,
}

impl SmtpSecurity {
    fn default_port(self) -> u16 {
        match self {
            SmtpSecurity::Starttls => 587,
            SmtpSecurity::Tls => 465,
            SmtpSecurity::None => 25,
        }
    }
}

/// `[services.notifications.email]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SmtpSettings {
    /// The SMTP server's host name (also the name its certificate must have).
    pub host: String,
    /// Defaults by `security`: 587, 465, 25.
    pub port: Option<u16>,
    pub security: SmtpSecurity,
    /// Log in as this user (with `password`); no login when unset.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The sender mailbox: `noreply@example.com` or `Example <noreply@example.com>`.
    pub from: String,
    /// The name given in EHLO; this host's name by default.
    pub hello_name: Option<String>,
    pub per_second: u32,
    pub required: bool,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            host: String::new(),
            port: None,
            security: SmtpSecurity::default(),
            username: None,
            password: None,
            from: String::new(),
            hello_name: None,
            per_second: DEFAULT_PER_SECOND,
            required: false,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl SmtpSettings {
    pub fn common(&self) -> Common {
        Common {
            per_second: self.per_second,
            required: self.required,
            timeout: self.timeout,
        }
    }

    /// Checks the settings and builds the provider; problems name their keys
    /// (`email.from`), never quoting the password.
    pub fn build(&self) -> Result<EmailProvider, Vec<SettingProblem>> {
        let mut problems = Vec::new();
        check_common(Channel::Email, self.common(), &mut problems);
        let host = self.host.trim();
        if host.is_empty() {
            problems.push(SettingProblem::new("email.host", "required"));
        } else if host.contains(|c: char| c.is_whitespace() || c == '/' || c == ':') {
            problems.push(SettingProblem::new(
                "email.host",
                "a host name or address only (the port is email.port)",
            ));
        }
        if self.port == Some(0) {
            problems.push(SettingProblem::new("email.port", "must be 1 to 65535"));
        }
        let from = match self.from.trim() {
            "" => {
                problems.push(SettingProblem::new(
                    "email.from",
                    "required (the sender, as noreply@example.com or Name <noreply@example.com>)",
                ));
                None
            }
            from => match from.parse::<Mailbox>() {
                Ok(mailbox) => Some(mailbox),
                Err(e) => {
                    problems.push(SettingProblem::new(
                        "email.from",
                        format!("not an email address ({e})"),
                    ));
                    None
                }
            },
        };
        let credentials = match (&self.username, &self.password) {
            (None, None) => None,
            (Some(user), Some(password)) if !user.is_empty() && !password.is_empty() => {
                Some(Credentials::new(user.clone(), password.expose().to_owned()))
            }
            (Some(user), _) if user.is_empty() => {
                problems.push(SettingProblem::new("email.username", "must not be empty"));
                None
            }
            (Some(_), _) => {
                problems.push(SettingProblem::new(
                    "email.password",
                    "required with email.username",
                ));
                None
            }
            (None, Some(_)) => {
                problems.push(SettingProblem::new(
                    "email.username",
                    "required with email.password",
                ));
                None
            }
        };
        let hello = match self.hello_name.as_deref().map(str::trim) {
            None => ClientId::default(),
            Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                ClientId::Domain(name.to_owned())
            }
            Some(_) => {
                problems.push(SettingProblem::new(
                    "email.hello_name",
                    "a host name, without spaces",
                ));
                ClientId::default()
            }
        };
        let tls = match self.security {
            SmtpSecurity::None => None,
            _ if host.is_empty() => None,
            _ => match TlsParameters::new(host.to_owned()) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    problems.push(SettingProblem::new(
                        "email.host",
                        format!("TLS to it cannot be set up ({})", error_chain(&e)),
                    ));
                    None
                }
            },
        };
        if self.security == SmtpSecurity::None && credentials.is_some() {
            tracing::warn!(
                host,
                "email.security is \"none\": the SMTP password crosses the network unencrypted"
            );
        }
        match from {
            Some(from) if problems.is_empty() => Ok(EmailProvider {
                host: host.to_owned(),
                port: self.port.unwrap_or(self.security.default_port()),
                security: self.security,
                tls,
                credentials,
                password: self.password.clone().unwrap_or_default(),
                domain: from.email.domain().to_owned(),
                from,
                hello,
                timeout: self.timeout,
                idle: Mutex::new(Vec::new()),
            }),
            _ => Err(problems),
        }
    }
}

/// Sends email through one SMTP server.
pub struct EmailProvider {
    host: String,
    port: u16,
    security: SmtpSecurity,
    /// For `tls` and `starttls`.
    tls: Option<TlsParameters>,
    credentials: Option<Credentials>,
    /// Only to keep it out of error texts.
    password: Secret,
    from: Mailbox,
    /// Of `from`: the right-hand side of each Message-ID.
    domain: String,
    hello: ClientId,
    timeout: Duration,
    idle: Mutex<Vec<Idle>>,
}

struct Idle {
    connection: AsyncSmtpConnection,
    since: Instant,
}

impl EmailProvider {
    /// The message as sent (`Message-ID`, parts), or why it cannot be.
    fn message(&self, delivery: &Delivery<'_>) -> Result<Message, SendError> {
        let to: Mailbox = delivery
            .to
            .parse()
            .map_err(|e| SendError::Rejected(format!("to: not an email address ({e})")))?;
        let builder = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(delivery.subject.unwrap_or_default())
            .message_id(Some(format!("<{}@{}>", delivery.id, self.domain)))
            .date_now();
        let text = delivery.body.to_owned();
        let built = match delivery.html {
            Some(html) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html.to_owned()))
            }
            None => builder.singlepart(SinglePart::plain(text)),
        };
        built.map_err(|e| SendError::Rejected(format!("the message cannot be built ({e})")))
    }

    async fn deliver(&self, delivery: &Delivery<'_>) -> Result<(), SendError> {
        let message = self.message(delivery)?;
        let attempt = async {
            let mut connection = self.connection().await?;
            match transaction(&mut connection, &message).await {
                Ok(()) => {
                    self.keep(connection);
                    Ok(())
                }
                Err(Failed { error, reusable }) => {
                    // After a refusal the session is still good once reset.
                    if reusable && connection.command(Rset).await.is_ok() {
                        self.keep(connection);
                    } else {
                        connection.abort().await;
                    }
                    Err(error)
                }
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SendError::Retryable(format!(
                "smtp {}:{}: no answer within {:?}",
                self.host, self.port, self.timeout
            ))),
        }
    }

    /// An idle connection still alive, or a new one: connected, greeted,
    /// encrypted as configured and logged in. Any failure here is retryable.
    async fn connection(&self) -> Result<AsyncSmtpConnection, SendError> {
        while let Some(Idle {
            mut connection,
            since,
        }) = self.take_idle()
        {
            if since.elapsed() < IDLE_FOR && connection.test_connected().await {
                return Ok(connection);
            }
            connection.abort().await;
        }
        let unreachable = |what: &str, e: lettre::transport::smtp::Error| {
            SendError::Retryable(format!(
                "smtp {}:{}: {what}: {}",
                self.host,
                self.port,
                error_chain(&e)
            ))
        };
        let connected = match self.security {
            // lettre connects the socket itself when TLS comes first, and
            // keeps Nagle's algorithm on it (see `nodelay_socket`).
            SmtpSecurity::Tls => {
                AsyncSmtpConnection::connect_tokio1(
                    (self.host.as_str(), self.port),
                    Some(self.timeout),
                    &self.hello,
                    self.tls.clone(),
                    None,
                )
                .await
            }
            _ => {
                let socket = self.nodelay_socket().await?;
                AsyncSmtpConnection::connect_with_transport(Box::new(socket), &self.hello).await
            }
        };
        let mut connection = connected.map_err(|e| unreachable("cannot connect", e))?;
        if let (SmtpSecurity::Starttls, Some(tls)) = (self.security, &self.tls) {
            // Required, not opportunistic: without it the login and the
            // message would cross the network in the clear.
            if let Err(e) = connection.starttls(tls.clone(), &self.hello).await {
                connection.abort().await;
                return Err(unreachable("STARTTLS failed", e));
            }
        }
        if let Some(credentials) = &self.credentials {
            if let Err(e) = connection
                .auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await
            {
                connection.abort().await;
                return Err(unreachable("login refused", e));
            }
        }
        Ok(connection)
    }

    /// A TCP connection to the server with `TCP_NODELAY`: lettre writes a
    /// message's closing `.` apart from the message, and with Nagle's
    /// algorithm on, that write waits for the server's delayed ACK — 40 ms
    /// a message on Linux (bench/README, Notifications).
    async fn nodelay_socket(&self) -> Result<tokio::net::TcpStream, SendError> {
        let failed = |what: String| {
            SendError::Retryable(format!("smtp {}:{}: {what}", self.host, self.port))
        };
        let connect = tokio::net::TcpStream::connect((self.host.as_str(), self.port));
        let socket = match tokio::time::timeout(self.timeout, connect).await {
            Ok(Ok(socket)) => socket,
            Ok(Err(e)) => return Err(failed(format!("cannot connect: {e}"))),
            Err(_) => return Err(failed(format!("no connection within {:?}", self.timeout))),
        };
        socket
            .set_nodelay(true)
            .map_err(|e| failed(format!("cannot set TCP_NODELAY: {e}")))?;
        Ok(socket)
    }

    fn take_idle(&self) -> Option<Idle> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn keep(&self, connection: AsyncSmtpConnection) {
        if connection.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
        // Past MAX_IDLE the connection is dropped, which closes it.
    }
}

/// A failed transaction: what to report, and whether the session may be
/// reset and reused (the server answered; the connection did not break).
struct Failed {
    error: SendError,
    reusable: bool,
}

/// MAIL, RCPT, DATA and the message, each refusal classified by its step.
async fn transaction(
    connection: &mut AsyncSmtpConnection,
    message: &Message,
) -> Result<(), Failed> {
    let envelope = message.envelope();
    let body = message.formatted();
    // As lettre's own send: SMTPUTF8 for non-ASCII addresses, 8BITMIME for
    // a non-ASCII body (lettre encodes text parts, so this is rare).
    let mut parameters = Vec::new();
    let addresses = envelope.from().into_iter().chain(envelope.to());
    if addresses.map(Address::as_ref).any(|a: &str| !a.is_ascii()) {
        if !connection
            .server_info()
            .supports_feature(Extension::SmtpUtfEight)
        {
            return Err(Failed {
                error: SendError::Rejected(
                    "to: a non-ASCII address, and the server does not take SMTPUTF8".to_owned(),
                ),
                reusable: true,
            });
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !body.is_ascii() {
        if !connection
            .server_info()
            .supports_feature(Extension::EightBitMime)
        {
            return Err(Failed {
                error: SendError::Rejected(
                    "the message is not ASCII, and the server does not take 8BITMIME".to_owned(),
                ),
                reusable: true,
            });
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }

    connection
        .command(Mail::new(envelope.from().cloned(), parameters))
        .await
        // The sender is ours: refusing it refuses every message.
        .map_err(|e| refused("the sender was refused", e, false))?;
    for recipient in envelope.to() {
        connection
            .command(Rcpt::new(recipient.clone(), Vec::new()))
            .await
            .map_err(|e| refused("the recipient was refused", e, true))?;
    }
    connection
        .command(Data)
        .await
        .map_err(|e| refused("DATA was refused", e, true))?;
    connection
        .message(&body)
        .await
        .map_err(|e| refused("the message was refused", e, true))?;
    Ok(())
}

/// A refusal at one step: a 5xx is final when the step concerns this message
/// only (`final_if_permanent`); a 4xx, a broken connection or an unreadable
/// answer is retryable.
fn refused(what: &str, e: lettre::transport::smtp::Error, final_if_permanent: bool) -> Failed {
    let text = format!("smtp: {what}: {}", error_chain(&e));
    let answered = e.is_permanent() || e.is_transient();
    let error = if e.is_permanent() && final_if_permanent {
        SendError::Rejected(text)
    } else {
        SendError::Retryable(text)
    };
    Failed {
        error,
        reusable: answered,
    }
}

impl Provider for EmailProvider {
    fn channel(&self) -> Channel {
        Channel::Email
    }

    fn send<'a>(&'a self, delivery: &'a Delivery<'a>) -> BoxFuture<'a, Result<(), SendError>> {
        Box::pin(async move {
            self.deliver(delivery)
                .await
                .map_err(|e| e.redacted(&[self.password.expose()]))
        })
    }

    /// Connects, greets and logs in as a send would, and keeps the
    /// connection for the next send.
    fn ping(&self) -> Option<BoxFuture<'_, Result<(), String>>> {
        Some(Box::pin(async move {
            let connected = tokio::time::timeout(self.timeout, self.connection()).await;
            match connected {
                Ok(Ok(connection)) => {
                    self.keep(connection);
                    Ok(())
                }
                Ok(Err(e)) => Err(e.redacted(&[self.password.expose()]).to_string()),
                Err(_) => Err(format!(
                    "smtp {}:{}: no answer within {:?}",
                    self.host, self.port, self.timeout
                )),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    use tokio::net::TcpListener;

    use super::*;

    const PASSWORD: &str = "smtp-pa55word-secret";

    /// How the test server behaves.
    #[derive(Clone, Default)]
    struct Behaviour {
        /// Advertise AUTH and accept only these (user, password).
        login: Option<(&'static str, &'static str)>,
        /// Answer RCPT for these addresses with this line.
        refuse: Option<(&'static str, &'static str)>,
        /// Accept the connection and say nothing.
        silent: bool,
    }

    /// What one SMTP session of the test server saw.
    #[derive(Clone, Debug, Default)]
    struct Session {
        ehlo: Vec<String>,
        /// Decoded AUTH exchanges: (user, password).
        logins: Vec<(String, String)>,
        mail_from: Vec<String>,
        rcpt_to: Vec<String>,
        /// Each message's data, dot-unstuffed.
        messages: Vec<String>,
        noops: usize,
    }

    /// A real SMTP server (RFC 5321, with AUTH PLAIN and LOGIN of RFC 4954)
    /// on loopback, recording each session.
    struct SmtpServer {
        port: u16,
        sessions: Arc<Mutex<Vec<Arc<Mutex<Session>>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for SmtpServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl SmtpServer {
        async fn start(behaviour: Behaviour) -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let sessions = Arc::new(Mutex::new(Vec::new()));
            let all = sessions.clone();
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let session = Arc::new(Mutex::new(Session::default()));
                    all.lock().unwrap().push(session.clone());
                    let behaviour = behaviour.clone();
                    tokio::spawn(async move {
                        let _ = serve(stream, behaviour, session).await;
                    });
                }
            });
            Self {
                port,
                sessions,
                task,
            }
        }

        fn sessions(&self) -> Vec<Session> {
            self.sessions
                .lock()
                .unwrap()
                .iter()
                .map(|s| s.lock().unwrap().clone())
                .collect()
        }
    }

    async fn serve(
        stream: tokio::net::TcpStream,
        behaviour: Behaviour,
        session: Arc<Mutex<Session>>,
    ) -> std::io::Result<()> {
        if behaviour.silent {
            tokio::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read);
        let mut line = String::new();
        write.write_all(b"220 test.local ESMTP ready\r\n").await?;
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let command = line.trim_end_matches(['\r', '\n']).to_owned();
            let upper = command.to_ascii_uppercase();
            let reply: String = if let Some(name) = upper.strip_prefix("EHLO ") {
                session.lock().unwrap().ehlo.push(name.to_ascii_lowercase());
                let mut reply = "250-test.local\r\n250-8BITMIME\r\n".to_owned();
                if behaviour.login.is_some() {
                    reply.push_str("250-AUTH PLAIN LOGIN\r\n");
                }
                reply.push_str("250 SMTPUTF8\r\n");
                reply
            } else if upper.starts_with("AUTH PLAIN") {
                let initial = command.get(11..).unwrap_or("").trim().to_owned();
                let encoded = if initial.is_empty() {
                    write.write_all(b"334 \r\n").await?;
                    line.clear();
                    lines.read_line(&mut line).await?;
                    line.trim().to_owned()
                } else {
                    initial
                };
                let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
                let mut parts = decoded.split('\0').skip(1);
                let user = parts.next().unwrap_or_default().to_owned();
                let password = parts.next().unwrap_or_default().to_owned();
                login(&behaviour, &session, user, password)
            } else if upper == "AUTH LOGIN" {
                write.write_all(b"334 VXNlcm5hbWU6\r\n").await?;
                line.clear();
                lines.read_line(&mut line).await?;
                let user = String::from_utf8(STANDARD.decode(line.trim()).unwrap()).unwrap();
                write.write_all(b"334 UGFzc3dvcmQ6\r\n").await?;
                line.clear();
                lines.read_line(&mut line).await?;
                let password = String::from_utf8(STANDARD.decode(line.trim()).unwrap()).unwrap();
                login(&behaviour, &session, user, password)
            } else if upper.starts_with("MAIL FROM:") {
                session
                    .lock()
                    .unwrap()
                    .mail_from
                    .push(command[10..].to_owned());
                "250 2.1.0 ok\r\n".to_owned()
            } else if upper.starts_with("RCPT TO:") {
                let address = command[8..].to_owned();
                match behaviour.refuse {
                    Some((refused, answer)) if address.contains(refused) => format!("{answer}\r\n"),
                    _ => {
                        session.lock().unwrap().rcpt_to.push(address);
                        "250 2.1.5 ok\r\n".to_owned()
                    }
                }
            } else if upper == "DATA" {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await? == 0 {
                        return Ok(());
                    }
                    if line == ".\r\n" {
                        break;
                    }
                    // RFC 5321 §4.5.2: a leading dot was doubled.
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                session.lock().unwrap().messages.push(data);
                "250 2.0.0 queued\r\n".to_owned()
            } else if upper == "NOOP" {
                session.lock().unwrap().noops += 1;
                "250 2.0.0 ok\r\n".to_owned()
            } else if upper == "RSET" {
                "250 2.0.0 ok\r\n".to_owned()
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            } else {
                "502 5.5.2 unknown command\r\n".to_owned()
            };
            write.write_all(reply.as_bytes()).await?;
        }
    }

    fn login(
        behaviour: &Behaviour,
        session: &Mutex<Session>,
        user: String,
        password: String,
    ) -> String {
        let ok = behaviour.login == Some((user.as_str(), password.as_str()));
        session.lock().unwrap().logins.push((user, password));
        if ok {
            "235 2.7.0 authentication successful\r\n".to_owned()
        } else {
            "535 5.7.8 authentication credentials invalid\r\n".to_owned()
        }
    }

    fn settings(port: u16) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: Some(port),
            security: SmtpSecurity::None,
            from: "Stageworks <noreply@mail.example.com>".into(),
            hello_name: Some("sender.example.com".into()),
            timeout: Duration::from_secs(5),
            ..SmtpSettings::default()
        }
    }

    fn delivery<'a>(to: &'a str, html: Option<&'a str>) -> Delivery<'a> {
        Delivery {
            id: uuid::Uuid::now_v7(),
            to,
            subject: Some("Your invoice INV-0042"),
            body: "Hello Ada,\r\n\r\nyour invoice is ready.\r\n.\r\nThe line above is a lone dot.",
            html,
            push: None,
        }
    }

    /// A MIME entity split into its (unfolded, lowercased-name) headers and body.
    fn entity(text: &str) -> (Vec<(String, String)>, String) {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push(' ');
                    value.push_str(line.trim());
                }
            } else if let Some((name, value)) = line.split_once(':') {
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        (headers, body.to_owned())
    }

    fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A part's text, its transfer encoding undone (7bit or quoted-printable).
    fn decoded(headers: &[(String, String)], body: &str) -> String {
        match header(headers, "content-transfer-encoding") {
            Some("quoted-printable") => {
                let joined = body.replace("=\r\n", "");
                let mut out = Vec::new();
                let bytes = joined.as_bytes();
                let mut i = 0;
                while i < bytes.len() {
                    if bytes[i] == b'=' && i + 2 < bytes.len() {
                        out.push(u8::from_str_radix(&joined[i + 1..i + 3], 16).unwrap());
                        i += 3;
                    } else {
                        out.push(bytes[i]);
                        i += 1;
                    }
                }
                String::from_utf8(out).unwrap()
            }
            Some("7bit") | None => body.to_owned(),
            Some(other) => panic!("unexpected encoding {other}"),
        }
    }

    #[tokio::test]
    async fn sends_text_and_html_with_the_message_id() {
        let server = SmtpServer::start(Behaviour::default()).await;
        let provider = settings(server.port).build().unwrap();
        let html = "<p>Hello <b>Ada</b>, your invoice is ready.</p>";
        let delivery = delivery("Ada Lovelace <ada@example.org>", Some(html));
        provider.send(&delivery).await.unwrap();

        let sessions = server.sessions();
        assert_eq!(sessions.len(), 1);
        let session = &sessions[0];
        assert_eq!(session.ehlo, ["sender.example.com"]);
        assert_eq!(session.mail_from, ["<noreply@mail.example.com>"]);
        assert_eq!(session.rcpt_to, ["<ada@example.org>"]);
        assert_eq!(session.messages.len(), 1);

        let (headers, body) = entity(&session.messages[0]);
        let from = header(&headers, "from").unwrap();
        assert!(
            from.contains("Stageworks") && from.contains("<noreply@mail.example.com>"),
            "{from}"
        );
        let to = header(&headers, "to").unwrap();
        assert!(
            to.contains("Ada Lovelace") && to.contains("<ada@example.org>"),
            "{to}"
        );
        assert_eq!(header(&headers, "subject"), Some("Your invoice INV-0042"));
        assert_eq!(
            header(&headers, "message-id"),
            Some(format!("<{}@mail.example.com>", delivery.id).as_str())
        );
        assert!(header(&headers, "date").is_some());
        let content_type = header(&headers, "content-type").unwrap();
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .to_owned();

        let parts: Vec<_> = body
            .split(&format!("--{boundary}"))
            .map(|p| p.trim_start_matches("\r\n"))
            .filter(|p| !p.is_empty() && !p.starts_with("--"))
            .map(entity)
            .collect();
        assert_eq!(parts.len(), 2, "{body}");
        let (text_headers, text) = &parts[0];
        assert!(header(text_headers, "content-type")
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(decoded(text_headers, text).trim_end(), delivery.body);
        let (html_headers, html_body) = &parts[1];
        assert!(header(html_headers, "content-type")
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(decoded(html_headers, html_body).trim_end(), html);
    }

    #[tokio::test]
    async fn a_text_only_message_is_one_part_and_connections_are_reused() {
        let server = SmtpServer::start(Behaviour::default()).await;
        let provider = settings(server.port).build().unwrap();
        let first = delivery("ada@example.org", None);
        provider.send(&first).await.unwrap();
        let second = delivery("grace@example.org", None);
        provider.send(&second).await.unwrap();

        let sessions = server.sessions();
        assert_eq!(
            sessions.len(),
            1,
            "the second message reuses the connection"
        );
        let session = &sessions[0];
        assert_eq!(session.noops, 1, "checked alive before reuse");
        assert_eq!(
            session.rcpt_to,
            ["<ada@example.org>", "<grace@example.org>"]
        );
        let (headers, body) = entity(&session.messages[1]);
        assert!(header(&headers, "content-type")
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(decoded(&headers, &body).trim_end(), second.body);
        assert_eq!(
            header(&headers, "message-id"),
            Some(format!("<{}@mail.example.com>", second.id).as_str())
        );
    }

    #[tokio::test]
    async fn a_refused_recipient_is_rejected_and_the_session_goes_on() {
        let server = SmtpServer::start(Behaviour {
            refuse: Some((
                "nobody@",
                "550 5.1.1 <nobody@example.org>: Recipient address rejected",
            )),
            ..Behaviour::default()
        })
        .await;
        let provider = settings(server.port).build().unwrap();
        let err = provider
            .send(&delivery("nobody@example.org", None))
            .await
            .unwrap_err();
        let SendError::Rejected(message) = &err else {
            panic!("{err:?}")
        };
        assert!(
            message.contains("550") && message.contains("Recipient address rejected"),
            "{message}"
        );
        provider
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap();
        let sessions = server.sessions();
        assert_eq!(sessions.len(), 1, "reset and reused after the refusal");
        assert_eq!(sessions[0].messages.len(), 1);
    }

    #[tokio::test]
    async fn a_temporary_refusal_is_retryable() {
        let server = SmtpServer::start(Behaviour {
            refuse: Some(("later@", "450 4.2.0 greylisted, try again later")),
            ..Behaviour::default()
        })
        .await;
        let provider = settings(server.port).build().unwrap();
        let err = provider
            .send(&delivery("later@example.org", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Retryable(m) if m.contains("450")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn no_server_or_a_silent_one_is_retryable() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let provider = settings(port).build().unwrap();
        let err = provider
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Retryable(m) if m.contains("cannot connect")),
            "{err:?}"
        );

        let silent = SmtpServer::start(Behaviour {
            silent: true,
            ..Behaviour::default()
        })
        .await;
        let provider = SmtpSettings {
            timeout: Duration::from_millis(300),
            ..settings(silent.port)
        }
        .build()
        .unwrap();
        let started = Instant::now();
        let err = provider
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn starttls_is_required_not_opportunistic() {
        // The test server offers no STARTTLS: nothing is sent in the clear.
        let server = SmtpServer::start(Behaviour::default()).await;
        let provider = SmtpSettings {
            security: SmtpSecurity::Starttls,
            ..settings(server.port)
        }
        .build()
        .unwrap();
        let err = provider
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Retryable(m) if m.contains("STARTTLS")),
            "{err:?}"
        );
        assert!(server.sessions().iter().all(|s| s.mail_from.is_empty()));
    }

    #[tokio::test]
    async fn the_login_carries_the_credentials_and_no_error_shows_them() {
        let server = SmtpServer::start(Behaviour {
            login: Some(("mailer", PASSWORD)),
            refuse: Some(("nobody@", "550 5.1.1 no such user")),
            ..Behaviour::default()
        })
        .await;
        let with_login = |password: &str| {
            SmtpSettings {
                username: Some("mailer".into()),
                password: Some(password.into()),
                ..settings(server.port)
            }
            .build()
            .unwrap()
        };
        let provider = with_login(PASSWORD);
        provider
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap();
        let sessions = server.sessions();
        assert_eq!(
            sessions[0].logins,
            [("mailer".to_owned(), PASSWORD.to_owned())]
        );
        assert_eq!(sessions[0].messages.len(), 1);

        let refused = provider
            .send(&delivery("nobody@example.org", None))
            .await
            .unwrap_err();
        assert!(matches!(refused, SendError::Rejected(_)), "{refused:?}");

        // A wrong password: the login is refused, which no message can fix,
        // so it is retryable (the provider is misconfigured, not the message).
        let wrong = "wrong-pa55word-secret";
        let err = with_login(wrong)
            .send(&delivery("ada@example.org", None))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, SendError::Retryable(m) if m.contains("login refused") && m.contains("535")),
            "{err:?}"
        );
        assert_eq!(server.sessions().last().unwrap().logins[0].1, wrong);

        for (err, secret) in [(&refused, PASSWORD), (&err, wrong)] {
            let text = format!("{err} {err:?}");
            assert!(!text.contains(secret), "{text}");
        }
    }

    #[tokio::test]
    async fn headers_cannot_be_injected_and_bad_addresses_are_rejected() {
        let server = SmtpServer::start(Behaviour::default()).await;
        let provider = settings(server.port).build().unwrap();
        let mut injected = delivery("ada@example.org", None);
        injected.subject = Some("Hello\r\nBcc: eve@example.net");
        provider.send(&injected).await.unwrap();
        let sessions = server.sessions();
        let message = &sessions[0].messages[0];
        let (headers, _) = entity(message);
        assert!(header(&headers, "bcc").is_none(), "{message}");
        assert_eq!(sessions[0].rcpt_to, ["<ada@example.org>"]);

        for to in [
            "not an address",
            "ada@example.org\r\nRCPT TO:<eve@example.net>",
            "",
        ] {
            let err = provider.send(&delivery(to, None)).await.unwrap_err();
            assert!(
                matches!(&err, SendError::Rejected(m) if m.starts_with("to: ")),
                "{to:?}: {err:?}"
            );
        }
        assert_eq!(server.sessions()[0].rcpt_to.len(), 1);
    }

    #[test]
    fn settings_problems_name_their_keys() {
        let problems = SmtpSettings {
            host: String::new(),
            port: Some(0),
            from: "not an address".into(),
            username: Some("mailer".into()),
            password: None,
            hello_name: Some("two words".into()),
            ..SmtpSettings::default()
        }
        .build()
        .err()
        .unwrap();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(
            keys,
            [
                "email.host",
                "email.port",
                "email.from",
                "email.password",
                "email.hello_name"
            ]
        );
        assert!(
            problems[2].message.starts_with("not an email address"),
            "{problems:?}"
        );

        let problems = SmtpSettings {
            host: "smtp.example.com:587".into(),
            from: "noreply@example.com".into(),
            password: Some(PASSWORD.into()),
            ..SmtpSettings::default()
        }
        .build()
        .err()
        .unwrap();
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_ref()).collect();
        assert_eq!(keys, ["email.host", "email.username"]);
        assert!(!format!("{problems:?}").contains(PASSWORD));

        // TLS settings build (the certificate roots load) without a server.
        for security in [SmtpSecurity::Starttls, SmtpSecurity::Tls] {
            let provider = SmtpSettings {
                host: "smtp.example.com".into(),
                from: "noreply@example.com".into(),
                security,
                ..SmtpSettings::default()
            }
            .build()
            .unwrap();
            assert_eq!(provider.port, security.default_port());
        }
    }
}
