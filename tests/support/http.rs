//! The agent's HTTP API as a test reads it: one HTTP/1.1 request per connection (no async
//! runtime), the answer parsed by the protocol (status line, headers, then a
//! `Content-Length`, chunked or read-to-close body), and JSON decoded into the crate's own
//! answer types (`swimd::api::json`), so a renamed field is a compile error in the test.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde::de::DeserializeOwned;
use swimd::api::json::{MemberJson, MembersJson, SelfJson};

/// How long a request waits for the next bytes of its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(3);

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers as sent, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body, chunked transfer coding undone.
    pub body: String,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body decoded as JSON into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_str(&self.body).map_err(|e| {
            format!(
                "HTTP {}: not a {}: {e}: {}",
                self.status,
                std::any::type_name::<T>(),
                self.body
            )
        })
    }
}

/// `method path` to `addr` (`ip:port`), with a JSON `body` if given.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<Response, String> {
    request_within(addr, method, path, body, READ_TIMEOUT)
}

/// [`request`], waiting up to `read_timeout` for each read of the answer.
pub fn request_within(
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    read_timeout: Duration,
) -> Result<Response, String> {
    let socket: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1))
        .map_err(|e| format!("{addr}: {e}"))?;
    stream
        .set_read_timeout(Some(read_timeout))
        .map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| format!("{method} {path} to {addr}: {e}"))?;
    read_response(BufReader::new(stream)).map_err(|e| format!("{method} {path} from {addr}: {e}"))
}

/// `GET path`: a 200's JSON body decoded into `T`; another status is an error with the body.
///
/// Panics when a 200 does not decode into `T`: that is a bug in the agent or in the test,
/// not a state to wait out.
pub fn get<T: DeserializeOwned>(addr: &str, path: &str) -> Result<T, String> {
    let answer = request(addr, "GET", path, None)?;
    if answer.status != 200 {
        return Err(format!("HTTP {}: {}", answer.status, answer.body));
    }
    Ok(answer
        .json()
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}")))
}

/// `GET /v1/members`: every member the agent knows, itself included, sorted by name.
pub fn members(addr: &str) -> Result<Vec<MemberJson>, String> {
    get::<MembersJson>(addr, "/v1/members").map(|m| m.members)
}

/// `GET /v1/members/{name}`: one member (an error when the agent does not know it).
pub fn member(addr: &str, name: &str) -> Result<MemberJson, String> {
    get(addr, &format!("/v1/members/{name}"))
}

/// `GET /v1/self`: the agent's own entry and its local view.
pub fn self_view(addr: &str) -> Result<SelfJson, String> {
    get(addr, "/v1/self")
}

fn read_response(mut reader: impl BufRead) -> Result<Response, String> {
    let status_line = read_line(&mut reader)?;
    let status = match status_line.split_whitespace().collect::<Vec<_>>()[..] {
        [version, code, ..] if version.starts_with("HTTP/") => code.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| format!("not an HTTP status line: {status_line:?}"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut reader)?;
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("not a header: {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let mut response = Response {
        status,
        headers,
        body: String::new(),
    };
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        read_chunked(&mut reader, &mut body)?;
    } else if let Some(length) = response.header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| format!("bad content-length {length:?}"))?;
        body.resize(length, 0);
        reader
            .read_exact(&mut body)
            .map_err(|e| format!("body of {length} bytes: {e}"))?;
    } else {
        reader
            .read_to_end(&mut body)
            .map_err(|e| format!("body: {e}"))?;
    }
    response.body = String::from_utf8(body).map_err(|e| format!("body: {e}"))?;
    // We asked the server to close: wait until it has, so that it, not we, ends the
    // connection, as the old client did (read to close) and as curl does.
    let _ = std::io::copy(&mut reader.take(1 << 20), &mut std::io::sink());
    Ok(response)
}

/// A chunked body: chunks of `SIZE[;extensions]\r\nDATA\r\n` up to a zero-size one, then
/// trailers up to an empty line.
fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> Result<(), String> {
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("bad chunk size {line:?}"))?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(());
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .map_err(|e| format!("chunk of {size} bytes: {e}"))?;
        let end = read_line(reader)?;
        if !end.is_empty() {
            return Err(format!("chunk of {size} bytes runs on: {end:?}"));
        }
    }
}

/// One line without its CRLF; an error at the end of the stream.
fn read_line(reader: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    match reader.read_line(&mut line) {
        Ok(0) => Err("connection closed mid-answer".to_string()),
        Ok(_) => Ok(line.trim_end_matches(['\r', '\n']).to_string()),
        Err(e) => Err(e.to_string()),
    }
}
