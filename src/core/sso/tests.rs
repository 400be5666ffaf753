//! Answer interpretation for every kind of SSO answer, and the HTTP client against small
//! servers written here (form body, Basic auth, keep-alive, timeouts, redirects, size limit).

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::Instant;

#[test]
fn introspection_answers() {
    let i = interpret_introspection(200, br#"{"active": true, "username": "alice", "sub": "x", "exp": 1795000000, "scope": "sip", "groups": ["a"]}"#).unwrap();
    assert!(i.active);
    assert_eq!(i.user.as_deref(), Some("alice"));
    assert_eq!(i.exp, Some(1795000000));
    assert_eq!(i.scope.as_deref(), Some("sip"));
    assert!(i.claims.contains_key("groups"));
    let i = interpret_introspection(200, br#"{"active": true, "sub": "bob"}"#).unwrap();
    assert_eq!(i.user.as_deref(), Some("bob"));
    let i = interpret_introspection(200, br#"{"active": false}"#).unwrap();
    assert!(!i.active && i.user.is_none());
    for (status, body) in [
        (200, &br#"{"active": "true"}"#[..]),
        (200, br#"{"active": true, "exp": "123"}"#),
        (200, br#"{"active": true, "exp": 1.5}"#),
        (200, br#"{"active": true, "username": 7}"#),
        (200, br#"{"username": "a"}"#),
        (200, br#"[true]"#),
        (200, b"<html>"),
        (200, b""),
    ] {
        assert!(matches!(interpret_introspection(status, body), Err(SsoError::Malformed(_))), "{:?}", String::from_utf8_lossy(body));
    }
    assert_eq!(interpret_introspection(500, b"{}"), Err(SsoError::Status(500)));
    assert_eq!(interpret_introspection(302, b""), Err(SsoError::Status(302)));
    assert_eq!(interpret_introspection(401, br#"{"error":"invalid_client"}"#), Err(SsoError::Status(401)));
}

#[test]
fn token_answers() {
    assert_eq!(
        interpret_token_response(200, br#"{"access_token": "2YotnFZFEjr1zCsicMWpAA", "token_type": "Bearer", "expires_in": 3600}"#),
        Ok(LoginOutcome::Session { access_token: "2YotnFZFEjr1zCsicMWpAA".into(), expires_in: Some(3600) })
    );
    assert_eq!(interpret_token_response(400, br#"{"error": "invalid_grant"}"#), Ok(LoginOutcome::InvalidGrant));
    assert_eq!(interpret_token_response(400, br#"{"error": "unknown_user"}"#), Ok(LoginOutcome::UnknownUser));
    assert_eq!(interpret_token_response(400, br#"{"error": "invalid_request"}"#), Err(SsoError::Status(400)));
    assert_eq!(interpret_token_response(401, br#"{"error": "invalid_client"}"#), Err(SsoError::Status(401)));
    assert_eq!(interpret_token_response(503, b""), Err(SsoError::Status(503)));
    for body in [
        &br#"{"token_type": "Bearer"}"#[..],
        br#"{"access_token": "a\r\nX-Evil: 1"}"#,
        br#"{"access_token": "has space"}"#,
        br#"{"access_token": ""}"#,
        br#"{"access_token": 5}"#,
        br#"{"access_token": "ok", "expires_in": "60"}"#,
        br#"{"access_token": "ok", "expires_in": -1}"#,
        b"not json",
    ] {
        assert!(matches!(interpret_token_response(200, body), Err(SsoError::Malformed(_))), "{:?}", String::from_utf8_lossy(body));
    }
    let long = format!(r#"{{"access_token": "{}"}}"#, "a".repeat(5000));
    assert!(interpret_token_response(200, long.as_bytes()).is_err());
}

/// What a test server does with each request.
#[derive(Clone, Copy)]
enum Behaviour {
    Json(u16, &'static str),
    Hang,
    Huge,
    Redirect,
}

struct TestServer {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

/// A one-thread HTTP/1.1 server with keep-alive; records (headers, body) of each request.
fn serve(behaviour: Behaviour) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/endpoint", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (connections.clone(), requests.clone());
    thread::spawn(move || {
        for stream in listener.incoming().take(8) {
            let Ok(stream) = stream else { return };
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            thread::spawn(move || handle(stream, behaviour, r));
        }
    });
    TestServer { url, connections, requests }
}

fn handle(stream: TcpStream, behaviour: Behaviour, log: Arc<Mutex<Vec<(String, String)>>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    loop {
        let mut headers = String::new();
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            headers.push_str(&line);
        }
        let mut body = vec![0u8; len];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        log.lock().unwrap().push((headers, String::from_utf8_lossy(&body).into_owned()));
        let reply = match behaviour {
            Behaviour::Json(status, json) => {
                format!("HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}", json.len())
            }
            Behaviour::Hang => {
                thread::sleep(Duration::from_secs(3));
                return;
            }
            Behaviour::Huge => {
                let body = format!(r#"{{"active": true, "pad": "{}"}}"#, "x".repeat(70 * 1024));
                format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len())
            }
            Behaviour::Redirect => {
                "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/elsewhere\r\nContent-Length: 0\r\n\r\n".to_string()
            }
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn client(url: &str, timeout_ms: u64) -> HttpSso {
    HttpSso::new(SsoSettings {
        introspect_url: Some(url.to_string()),
        token_url: Some(url.to_string()),
        client_id: Some("opensips".into()),
        client_secret: Some("s3:cr&t".into()),
        timeout: Duration::from_millis(timeout_ms),
        tls_ca_file: None,
        digest_grant_type: "urn:sso-auth:grant-type:sip-digest".into(),
    })
    .unwrap()
}

#[test]
fn introspection_request_and_keep_alive() {
    let server = serve(Behaviour::Json(200, r#"{"active": true, "username": "alice"}"#));
    let mut sso = client(&server.url, 2000);
    let i = sso.introspect("tok+en/=").unwrap();
    assert_eq!(i.user.as_deref(), Some("alice"));
    sso.introspect("second").unwrap();
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "one kept-alive connection");
    let reqs = server.requests.lock().unwrap();
    let (headers, body) = &reqs[0];
    assert_eq!(body, "token=tok%2Ben%2F%3D&token_type_hint=access_token");
    // base64("opensips:s3%3Acr%26t")
    let expected = base64::engine::general_purpose::STANDARD.encode("opensips:s3%3Acr%26t");
    assert!(headers.contains(&format!("Basic {expected}")), "{headers}");
    assert!(headers.to_ascii_lowercase().contains("content-type: application/x-www-form-urlencoded"));
}

#[test]
fn digest_login_form() {
    let server = serve(Behaviour::Json(200, r#"{"access_token": "newtoken", "expires_in": 60}"#));
    let mut sso = client(&server.url, 2000);
    let login = DigestLogin {
        username: "alice".into(),
        realm: "example.com".into(),
        nonce: "n1".into(),
        uri: "sip:example.com".into(),
        response: "abcd".into(),
        algorithm: "MD5".into(),
        method: "REGISTER".into(),
        qop: Some("auth-int".into()),
        nc: Some("00000001".into()),
        cnonce: Some("c".into()),
        opaque: None,
        body_hash: Some("ffff".into()),
    };
    assert_eq!(sso.digest_login(&login), Ok(LoginOutcome::Session { access_token: "newtoken".into(), expires_in: Some(60) }));
    let body = server.requests.lock().unwrap()[0].1.clone();
    assert_eq!(
        body,
        "grant_type=urn%3Asso-auth%3Agrant-type%3Asip-digest&username=alice&realm=example.com&nonce=n1\
         &uri=sip%3Aexample.com&response=abcd&algorithm=MD5&method=REGISTER&qop=auth-int&nc=00000001&cnonce=c&body_hash=ffff"
    );
}

#[test]
fn invalid_grant_reaches_the_interpreter() {
    let server = serve(Behaviour::Json(400, r#"{"error": "invalid_grant"}"#));
    let mut sso = client(&server.url, 2000);
    assert_eq!(sso.digest_login(&DigestLogin::default()), Ok(LoginOutcome::InvalidGrant));
}

#[test]
fn hanging_sso_times_out_in_budget() {
    let server = serve(Behaviour::Hang);
    let mut sso = client(&server.url, 300);
    let started = Instant::now();
    assert_eq!(sso.introspect("t"), Err(SsoError::Timeout));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(400), "took {took:?}");
}

#[test]
fn refused_redirect_and_huge() {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut sso = client(&format!("http://127.0.0.1:{port}/x"), 500);
    assert!(matches!(sso.introspect("t"), Err(SsoError::Unreachable(_))));
    let server = serve(Behaviour::Redirect);
    assert_eq!(client(&server.url, 500).introspect("t"), Err(SsoError::Status(302)));
    let server = serve(Behaviour::Huge);
    assert_eq!(client(&server.url, 2000).introspect("t"), Err(SsoError::TooLarge));
}

#[test]
fn https_against_plain_http_fails_closed() {
    let server = serve(Behaviour::Json(200, r#"{"active": true, "username": "a"}"#));
    let url = server.url.replace("http://", "https://");
    let mut sso = client(&url, 1000);
    assert!(matches!(sso.introspect("t"), Err(SsoError::Unreachable(_)) | Err(SsoError::Timeout)));
}

#[test]
fn bad_ca_file_is_a_config_error() {
    let dir = std::env::temp_dir().join(format!("sso-ca-{}", std::process::id()));
    std::fs::write(&dir, "not a certificate").unwrap();
    let r = HttpSso::new(SsoSettings {
        introspect_url: Some("https://sso.example/x".into()),
        token_url: None,
        client_id: None,
        client_secret: None,
        timeout: Duration::from_millis(100),
        tls_ca_file: Some(dir.to_string_lossy().into_owned()),
        digest_grant_type: "g".into(),
    });
    assert!(matches!(r, Err(SsoError::Config(_))));
    let _ = std::fs::remove_file(dir);
}

#[test]
fn debug_output_hides_the_client_secret() {
    let sso = client("http://127.0.0.1:9/x", 100);
    let text = format!("{:?}", sso.settings());
    assert!(!text.contains("s3:cr&t"));
}
