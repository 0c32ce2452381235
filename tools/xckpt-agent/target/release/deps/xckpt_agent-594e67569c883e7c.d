/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-594e67569c883e7c.d: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs

/work/wt-evict/tools/xckpt-agent/target/release/deps/xckpt_agent-594e67569c883e7c: src/main.rs src/free.rs src/kcore.rs src/meminfo.rs src/report.rs

src/main.rs:
src/free.rs:
src/kcore.rs:
src/meminfo.rs:
src/report.rs:
