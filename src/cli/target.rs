//! `NAME` and `NAME@LAYER` arguments.

use std::str::FromStr;

/// A domain or chain name with an optional layer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Domain (and chain) name, id or uuid.
    pub name: String,
    /// Layer id, if given.
    pub layer: Option<u64>,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, layer) = match s.rsplit_once('@') {
            Some((n, l)) => {
                let id = l.parse::<u64>().map_err(|_| {
                    format!("{s:?}: the part after '@' must be a layer number, e.g. {n}@3")
                })?;
                (n, Some(id))
            }
            None => (s, None),
        };
        if name.is_empty() {
            return Err(format!(
                "{s:?}: a domain name is needed, e.g. guest1 or guest1@3"
            ));
        }
        Ok(Target {
            name: name.to_string(),
            layer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_layer() {
        assert_eq!(
            "g".parse::<Target>().unwrap(),
            Target {
                name: "g".into(),
                layer: None
            }
        );
        assert_eq!(
            "g@3".parse::<Target>().unwrap(),
            Target {
                name: "g".into(),
                layer: Some(3)
            }
        );
        assert!("g@x".parse::<Target>().is_err());
        assert!("@3".parse::<Target>().is_err());
    }
}
