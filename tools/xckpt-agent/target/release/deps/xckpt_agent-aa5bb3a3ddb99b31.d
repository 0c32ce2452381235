/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-aa5bb3a3ddb99b31.d: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs

/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-aa5bb3a3ddb99b31: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs

src/main.rs:
src/free.rs:
src/kcore.rs:
src/meminfo.rs:
src/report.rs:
