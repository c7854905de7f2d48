//! A minimal blocking HTTP/1.1 client for talking to our own page servers on loopback.
