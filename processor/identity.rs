//! One person, many names: the identity map.
//!
//! GitHub knows an engineer as `alice-gh`, Okta as `alice@acme.example`, the
//! ticketing tool as `alice`. Controls that compare people (who authored,
//! reviewed, approved, deployed, was granted) compare *principals*: the
//! config's `[identities]` table maps every alias to one principal.
//!
//! ```toml
//! [identities]
//! alice = ["alice-gh", "alice@acme.example"]
//! ```
//!
//! Controls call it as the SQL function `principal(name)`: a known alias (or
//! the principal's own name) gives the principal; any other name gives
//! itself, lower-cased and trimmed, so unmapped tools still compare equal
//! when they spell a login the same way.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Alias → principal, all keys normalised.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identities {
    aliases: BTreeMap<String, String>,
}

fn normalise(name: &str) -> String {
    name.trim().to_lowercase()
}

impl Identities {
    /// Builds the map from `principal = [aliases…]`. An alias claimed by two
    /// principals is an error naming both.
    pub fn new(table: &BTreeMap<String, Vec<String>>) -> Result<Identities, String> {
        let mut aliases: BTreeMap<String, String> = BTreeMap::new();
        for (principal, names) in table {
            let principal_key = normalise(principal);
            if principal_key.is_empty() {
                return Err("identities: a principal's name is empty".into());
            }
            for name in std::iter::once(principal).chain(names) {
                let key = normalise(name);
                if key.is_empty() {
                    return Err(format!("identities.{principal}: an alias is empty"));
                }
                match aliases.get(&key) {
                    Some(other) if *other != principal_key => {
                        return Err(format!(
                            "identities: `{name}` is listed under both `{other}` and `{principal}`; \
                             an alias must name one person"
                        ))
                    }
                    _ => {
                        aliases.insert(key, principal_key.clone());
                    }
                }
            }
        }
        Ok(Identities { aliases })
    }

    /// The principal behind `name`.
    pub fn resolve(&self, name: &str) -> String {
        self.principal(name).into_owned()
    }

    /// The principal behind `name`, borrowed where no allocation is needed:
    /// a name already trimmed and lower-case ASCII, as most are, is its own
    /// normal form (index keys are read from every row).
    pub fn principal<'a>(&'a self, name: &'a str) -> Cow<'a, str> {
        let trimmed = name.trim();
        if trimmed.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
            return Cow::Borrowed(self.aliases.get(trimmed).map_or(trimmed, String::as_str));
        }
        let key = normalise(name);
        Cow::Owned(self.aliases.get(&key).cloned().unwrap_or(key))
    }

    pub fn is_empty(&self) -> bool {
        self.aliases.is_empty()
    }

    /// The SQL function `principal(text) → text`.
    pub fn udf(self: &Arc<Self>) -> ScalarUDF {
        ScalarUDF::new_from_impl(PrincipalUdf {
            identities: self.clone(),
            signature: Signature::one_of(
                vec![
                    TypeSignature::Exact(vec![DataType::Utf8]),
                    TypeSignature::Exact(vec![DataType::Utf8View]),
                    TypeSignature::Exact(vec![DataType::LargeUtf8]),
                ],
                Volatility::Immutable,
            ),
        })
    }
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PrincipalUdf {
    identities: Arc<Identities>,
    signature: Signature,
}

impl ScalarUDFImpl for PrincipalUdf {
    fn name(&self) -> &str {
        "principal"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let resolve = |s: Option<&str>| s.map(|s| self.identities.resolve(s));
        match &args.args[0] {
            ColumnarValue::Scalar(value) => {
                let text = match value {
                    ScalarValue::Utf8(s) | ScalarValue::Utf8View(s) | ScalarValue::LargeUtf8(s) => s.as_deref(),
                    _ => None,
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(resolve(text))))
            }
            ColumnarValue::Array(array) => {
                let array = cast(array, &DataType::Utf8)?;
                let strings = array.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("principal(): argument is not text".into())
                })?;
                // Few people, many rows: each distinct name is resolved once.
                let mut seen: datafusion::common::HashMap<&str, String> = Default::default();
                let mut out = StringBuilder::with_capacity(strings.len(), strings.value_data().len());
                for name in strings.iter() {
                    match name {
                        Some(name) => {
                            out.append_value(seen.entry(name).or_insert_with(|| self.identities.resolve(name)))
                        }
                        None => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish()) as ArrayRef))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries.iter().map(|(p, a)| (p.to_string(), a.iter().map(|s| s.to_string()).collect())).collect()
    }

    #[test]
    fn aliases_resolve_to_their_principal() {
        let ids = Identities::new(&table(&[("alice", &["alice-gh", "Alice@Acme.example"])])).unwrap();
        assert_eq!(ids.resolve("alice-gh"), "alice");
        assert_eq!(ids.resolve(" alice@acme.EXAMPLE "), "alice");
        assert_eq!(ids.resolve("alice"), "alice");
        assert_eq!(ids.resolve("Bob"), "bob");
        assert_eq!(ids.resolve("ÅSA "), "åsa");
        assert!(matches!(ids.principal("alice-gh"), Cow::Borrowed("alice")));
    }

    #[test]
    fn an_alias_of_two_principals_is_an_error() {
        let err = Identities::new(&table(&[("alice", &["shared"]), ("bob", &["shared"])])).unwrap_err();
        assert!(err.contains("shared") && err.contains("alice") && err.contains("bob"), "{err}");
    }
}
