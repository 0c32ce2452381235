/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-434ad8c7524bb525.d: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs Cargo.toml

/work/wt-evict/tools/xckpt-agent/target/release/deps/libxckpt_agent-434ad8c7524bb525.rmeta: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs Cargo.toml

src/main.rs:
src/free.rs:
src/kcore.rs:
src/meminfo.rs:
src/report.rs:
Cargo.toml:

# env-dep:CLIPPY_ARGS=
# env-dep:CLIPPY_CONF_DIR
