//! The note's five sites, stood in for by `server.rs` on 127.0.0.1, so that the demo runs
//! without network.

use std::io;

use crate::demo::say;
use crate::server::{Server, Site};

/// The note's five sites, as paths of the local server, with how long each takes to answer.
const SITES: &[Site] = &[
    ("www.baidu.com", 0.5),
    ("www.sina.com.cn", 0.2),
    ("www.163.com", 0.4),
    ("www.qq.com", 0.1),
    ("www.taobao.com", 0.3),
];

/// Starts the local server, says where, and returns it with the five sites' URLs. Dropping
/// the server stops it.
pub fn serve() -> io::Result<(Server, Vec<String>)> {
    let server = Server::start(SITES)?;
    say!("serving the note's five sites on {}", server.url(""));
    let urls = SITES.iter().map(|(site, _)| server.url(site)).collect();
    Ok((server, urls))
}
