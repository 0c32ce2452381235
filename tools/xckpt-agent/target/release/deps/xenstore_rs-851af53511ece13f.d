/work/wt-evict/tools/xckpt-agent/target/release/deps/xenstore_rs-851af53511ece13f.d: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/wire.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/mod.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/interface.rs

/work/wt-evict/tools/xckpt-agent/target/release/deps/libxenstore_rs-851af53511ece13f.rmeta: /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/lib.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/wire.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/mod.rs /root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/interface.rs

/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/lib.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/wire.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/mod.rs:
/root/.cargo/registry/src/index.crates.io-1949cf8c6b5b557f/xenstore-rs-0.8.0/src/unix/interface.rs:
