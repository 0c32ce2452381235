/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-12e31ce3f36d5c0a.d: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs Cargo.toml

/work/wt-evict/tools/xckpt-agent/target/release/deps/libxckpt_agent-12e31ce3f36d5c0a.rmeta: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs Cargo.toml

src/main.rs:
src/free.rs:
src/kcore.rs:
src/meminfo.rs:
src/report.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR
