//! CPU and platform state of a PVH / HVM domain, as the bodies of libxc's migration records
//! (PV guests: `pv.rs`).
//!
//! libxc's HVM save writes, at the end of each checkpoint, X86_TSC_INFO, HVM_CONTEXT and
//! HVM_PARAMS, and once up front X86_CPUID_POLICY and X86_MSR_POLICY (xg_sr_save_x86_hvm.c,
//! xg_sr_common_x86.c). Each [`StateBlob`] here carries exactly one such record body, so the
//! stream writer only adds the record header and padding. Records libxc would skip are skipped
//! too: HVM_PARAMS with no non-zero param, and empty CPUID / MSR policies. For HVM guests QEMU's
//! device state follows as a [`state_kind::QEMU_STATE`] blob.

use serde_json::json;
use xen_sys::abi::HVM_PARAMS_SAVED;
use xen_sys::{cpuid_record, msr_record};

use super::{op_err, XenDomain};
use crate::hv::{state_kind, Domain, GuestType, HvError, MachineState, StateBlob};
use crate::libxl::{qmp, xl};

/// The HVM_PARAMS record body: count u32, reserved u32, then (index u64, value u64) pairs,
/// little-endian, for the non-zero params in libxc's order.
pub(crate) fn hvm_params_record(params: &[(u32, u64)]) -> Option<Vec<u8>> {
    let set: Vec<_> = params.iter().filter(|(_, v)| *v != 0).collect();
    if set.is_empty() {
        return None;
    }
    let mut body = Vec::with_capacity(8 + 16 * set.len());
    body.extend_from_slice(&(set.len() as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    for (i, v) in set {
        body.extend_from_slice(&u64::from(*i).to_le_bytes());
        body.extend_from_slice(&v.to_le_bytes());
    }
    Some(body)
}

/// NUL-terminated (key, value) strings back to back; None for no pairs (libxl then writes no
/// EMULATOR_XENSTORE_DATA record either).
pub(crate) fn pack_xenstore_pairs(pairs: &[(String, String)]) -> Option<Vec<u8>> {
    if pairs.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (k, v) in pairs {
        for s in [k, v] {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
    }
    Some(out)
}

impl XenDomain {
    fn qmp(
        &self,
        command: &str,
        args: serde_json::Value,
        op: &'static str,
    ) -> Result<serde_json::Value, HvError> {
        qmp::execute(&self.qmp_socket(), command, args).map_err(|e| HvError::op(self.name(), op, e))
    }

    /// Turn on QEMU's global dirty log: QEMU then reports every page it writes into the guest
    /// (emulated DMA) to Xen's log-dirty bitmap, which Xen's own tracking cannot see (QEMU
    /// writes through its foreign mappings, not through the guest's p2m). Idempotent in QEMU.
    ///
    /// It is never turned off by xckpt: log-dirty stays on between checkpoints, so QEMU's
    /// reports must too, or an incremental would miss the pages QEMU wrote in between. Once
    /// log-dirty is off (`untrack`, another toolstack), Xen ignores the reports
    /// (`modified_memory` returns at once). And QEMU aborts on an `enable: false` while its log
    /// is off (7.2's `memory_global_dirty_log_stop` asserts it was on), a state QMP does not show.
    fn set_qemu_dirty_log(&self) -> Result<(), HvError> {
        self.qmp(
            "xen-set-global-dirty-log",
            json!({ "enable": true }),
            "QEMU dirty log",
        )?;
        Ok(())
    }

    /// QEMU's device state, passed back through a file descriptor (see [`qmp`]), over the
    /// session [`MachineState::ready_for_stop`] opened, or a new one.
    fn qemu_state(&self) -> Result<Vec<u8>, HvError> {
        let err = |e| HvError::op(self.name(), "QEMU device state", e);
        let mut kept = self.qemu_session.lock().unwrap_or_else(|e| e.into_inner());
        match kept.as_mut() {
            Some(session) => session.save().map_err(err),
            None => qmp::save_devices_state(&self.qmp_socket()).map_err(err),
        }
    }

    fn qmp_socket(&self) -> std::path::PathBuf {
        qmp::socket_path(&self.env.qmp_dir, self.domid)
    }

    /// QEMU's `physmap/<id>/{start_addr,size,name}` keys under its device-model path, packed as
    /// libxl's EMULATOR_XENSTORE_DATA body (None when QEMU registered no physmap entry). A
    /// restored QEMU finds its relocated VRAM through them.
    fn qemu_xenstore(&self) -> Result<Option<Vec<u8>>, HvError> {
        let root = format!("/local/domain/0/device-model/{}", self.domid);
        let entries = match self.with_xs(|xs| xs.directory(&format!("{root}/physmap"))) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(HvError::op(self.name(), "QEMU xenstore data", e)),
        };
        let mut pairs = Vec::with_capacity(entries.len() * 3);
        for entry in &entries {
            for sub in ["start_addr", "size", "name"] {
                let key = format!("physmap/{entry}/{sub}");
                let val = self
                    .with_xs(|xs| xs.read(&format!("{root}/{key}")))
                    .map_err(|e| {
                        HvError::op(self.name(), "QEMU xenstore data", format!("{key}: {e}"))
                    })?;
                pairs.push((key, val.to_string()));
            }
        }
        Ok(pack_xenstore_pairs(&pairs))
    }

    fn hvm_blobs(&self) -> Result<Vec<StateBlob>, HvError> {
        let d = self.domid;
        let mut out = Vec::with_capacity(6);
        let tsc = self.xc.tsc_info(d).map_err(op_err(self, "TSC info"))?;
        out.push(StateBlob {
            kind: state_kind::TSC_INFO,
            data: tsc.to_record(),
        });
        let ctx = self
            .xc
            .hvm_context(d)
            .map_err(op_err(self, "HVM context"))?;
        out.push(StateBlob {
            kind: state_kind::HVM_CONTEXT,
            data: ctx,
        });
        let mut params = Vec::with_capacity(HVM_PARAMS_SAVED.len());
        for idx in HVM_PARAMS_SAVED {
            params.push((
                idx,
                self.xc
                    .hvm_param(d, idx)
                    .map_err(op_err(self, "HVM param"))?,
            ));
        }
        if let Some(body) = hvm_params_record(&params) {
            out.push(StateBlob {
                kind: state_kind::HVM_PARAMS,
                data: body,
            });
        }
        out.extend(self.cpu_policy_blobs()?);
        Ok(out)
    }

    /// The X86_CPUID_POLICY and X86_MSR_POLICY bodies, each only when non-empty.
    pub(crate) fn cpu_policy_blobs(&self) -> Result<Vec<StateBlob>, HvError> {
        let mut out = Vec::with_capacity(2);
        let (leaves, msrs) = self
            .xc
            .cpu_policy(self.domid)
            .map_err(op_err(self, "CPU policy"))?;
        if !leaves.is_empty() {
            out.push(StateBlob {
                kind: state_kind::CPUID_POLICY,
                data: cpuid_record(&leaves),
            });
        }
        if !msrs.is_empty() {
            out.push(StateBlob {
                kind: state_kind::MSR_POLICY,
                data: msr_record(&msrs),
            });
        }
        Ok(out)
    }
}

impl MachineState for XenDomain {
    fn prepare_capture(&self) -> Result<(), HvError> {
        self.check_no_concurrent_save()?;
        self.ensure_watchdog()?;
        match self.guest_type {
            GuestType::Hvm => self.set_qemu_dirty_log(),
            _ => Ok(()),
        }
    }

    fn ready_for_stop(&self) -> Result<(), HvError> {
        if self.guest_type == GuestType::Hvm {
            let session = qmp::DeviceStateSession::open(&self.qmp_socket())
                .map_err(|e| HvError::op(self.name(), "QEMU device state", e))?;
            *self.qemu_session.lock().unwrap_or_else(|e| e.into_inner()) = Some(session);
        }
        Ok(())
    }

    fn stop_over(&self) {
        // Dropped outside the lock: the drop talks to QEMU (remove-fd).
        let session = self
            .qemu_session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        drop(session);
    }

    fn save_state(&self) -> Result<Vec<StateBlob>, HvError> {
        let mut blobs = self.cpu_state()?;
        if self.guest_type == GuestType::Hvm {
            blobs.push(StateBlob {
                kind: state_kind::QEMU_STATE,
                data: self.qemu_state()?,
            });
            if let Some(data) = self.qemu_xenstore()? {
                blobs.push(StateBlob {
                    kind: state_kind::QEMU_XENSTORE,
                    data,
                });
            }
        }
        Ok(blobs)
    }

    fn cpu_state(&self) -> Result<Vec<StateBlob>, HvError> {
        if self.guest_type == GuestType::Pv {
            self.pv_blobs()
        } else {
            self.hvm_blobs()
        }
    }

    fn config(&self) -> Result<Vec<u8>, HvError> {
        let kept = self
            .config_kept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match kept {
            Some(c) => Ok(c),
            None => self.fetch_config(),
        }
    }

    fn config_changed(&self) {
        *self.config_kept.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl XenDomain {
    /// The domain's config, fetched now (`xl list -l`) and kept for the capture that follows:
    /// its [`MachineState::config`] takes this copy instead of running `xl list -l` again, a
    /// few hundred ms of CPU under TCG. A balloon changes the config in between
    /// ([`MachineState::config_changed`]): the capture then fetches it anew.
    pub fn config_for_capture(&self) -> Result<Vec<u8>, HvError> {
        let c = self.fetch_config()?;
        *self.config_kept.lock().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
        Ok(c)
    }

    fn fetch_config(&self) -> Result<Vec<u8>, HvError> {
        // As text: `XlError::Spawn` quotes its io cause mid-sentence, and the command's one-line
        // message would print that cause a second time after it.
        xl::domain_config(&self.env.xl_command, self.domid)
            .map_err(|e| HvError::op(self.name(), "domain config", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xenstore_pairs_are_nul_terminated_strings() {
        assert_eq!(pack_xenstore_pairs(&[]), None);
        let b = pack_xenstore_pairs(&[
            ("physmap/f0000000/size".into(), "800000".into()),
            ("physmap/f0000000/name".into(), "vga.vram".into()),
        ])
        .unwrap();
        assert_eq!(
            b,
            b"physmap/f0000000/size\0800000\0physmap/f0000000/name\0vga.vram\0"
        );
    }

    #[test]
    fn hvm_params_body() {
        assert_eq!(hvm_params_record(&[(1, 0), (5, 0)]), None);
        let b = hvm_params_record(&[(1, 0xfeff), (5, 0), (36, 8)]).unwrap();
        let mut want = vec![2, 0, 0, 0, 0, 0, 0, 0];
        want.extend_from_slice(&1u64.to_le_bytes());
        want.extend_from_slice(&0xfeffu64.to_le_bytes());
        want.extend_from_slice(&36u64.to_le_bytes());
        want.extend_from_slice(&8u64.to_le_bytes());
        assert_eq!(b, want);
    }
}
