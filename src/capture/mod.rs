//! Live capture: pre-copy on log-dirty, a brief pause, write-behind.
