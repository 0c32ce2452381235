//! Who a domain is: resolving names / domids / uuids, its identity and its guest type.

use xen_sys::abi::{XcDomainInfo, XEN_DOMINF_DYING, XEN_DOMINF_HVM_GUEST};
use xen_sys::XenCtrl;
use xenstore_rs::Xs;

use crate::hv::{DomainIdentity, GuestType, HvError};

pub(crate) use crate::hv::uuid_text;

/// Whether `s` is a uuid in canonical text form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn read(xs: &dyn Xs, path: &str) -> Option<String> {
    xs.read(path)
        .ok()
        .map(|s| s.trim_end_matches('\0').to_string())
}

/// The domid `spec` names: a domid that exists, a uuid matching a domain handle, or a name
/// from xenstore. Dying domains are skipped.
pub(crate) fn resolve(xc: &XenCtrl, xs: &dyn Xs, spec: &str) -> Result<u32, HvError> {
    let lookup = |e| HvError::op(spec, "list domains", e);
    let live = |i: &XcDomainInfo| i.flags & XEN_DOMINF_DYING == 0;
    if let Ok(domid) = spec.parse::<u32>() {
        return match xc.domain_info(domid).map_err(lookup)? {
            Some(i) if live(&i) => Ok(domid),
            _ => Err(HvError::NoSuchDomain(spec.to_string())),
        };
    }
    if is_uuid(spec) {
        let want = spec.to_ascii_lowercase();
        let all = xc.all_domains().map_err(lookup)?;
        return all
            .iter()
            .find(|i| live(i) && uuid_text(&i.handle) == want)
            .map(|i| u32::from(i.domain))
            .ok_or_else(|| HvError::NoSuchDomain(spec.to_string()));
    }
    for i in xc.all_domains().map_err(lookup)?.iter().filter(|i| live(i)) {
        let domid = u32::from(i.domain);
        if read(xs, &format!("/local/domain/{domid}/name")).as_deref() == Some(spec) {
            return Ok(domid);
        }
    }
    Err(HvError::NoSuchDomain(spec.to_string()))
}

/// The identity of the domain `info` describes, now.
pub(crate) fn identity(xs: &dyn Xs, info: &XcDomainInfo) -> DomainIdentity {
    let domid = u32::from(info.domain);
    let uuid = uuid_text(&info.handle);
    let name = read(xs, &format!("/local/domain/{domid}/name"))
        .unwrap_or_else(|| format!("Domain-{domid}"));
    let vm = read(xs, &format!("/local/domain/{domid}/vm")).unwrap_or_default();
    let start = if vm.is_empty() {
        String::new()
    } else {
        read(xs, &format!("{vm}/start_time")).unwrap_or_default()
    };
    DomainIdentity {
        name,
        domid,
        instance: format!("xen:{domid}:{uuid}:{vm}:{start}"),
        uuid,
    }
}

/// The guest type: PV without the HVM flag; else libxl's recorded type (`/libxl/<domid>/type`,
/// `pvh` or `hvm`); without that node, HVM exactly when a device model is registered under
/// `/local/domain/0/device-model/<domid>`.
pub(crate) fn guest_type(xs: &dyn Xs, info: &XcDomainInfo) -> GuestType {
    if info.flags & XEN_DOMINF_HVM_GUEST == 0 {
        return GuestType::Pv;
    }
    let domid = info.domain;
    match read(xs, &format!("/libxl/{domid}/type")).as_deref() {
        Some("pvh") => GuestType::Pvh,
        Some("hvm") => GuestType::Hvm,
        _ if read(xs, &format!("/local/domain/0/device-model/{domid}/state")).is_some() => {
            GuestType::Hvm
        }
        _ => GuestType::Pvh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_forms() {
        let h = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let t = uuid_text(&h);
        assert_eq!(t, "12345678-9abc-def0-0102-030405060708");
        assert!(is_uuid(&t));
        assert!(!is_uuid("12345678-9abc-def0-0102-03040506070"));
        assert!(!is_uuid("guest-one"));
    }
}
