//! Host-guest protocol of berth: versioned handshake and length-prefixed serde frames
