//! Checks on the free text the API stores (names, descriptions): length in characters, no NUL
//! (PostgreSQL `text` cannot hold it) and no control characters. Accepted text is stored
//! byte for byte as given. [`Name`] is the one-line name of accounts and merchants.

use crate::error::Invalid;

/// Whether line breaks and tabs are allowed in the text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// A single line: no control characters at all.
    Single,
    /// Multi-line: `\n`, `\r` and `\t` allowed, other control characters refused.
    Multi,
}

/// Checks `value` has `min..=max` characters, is not blank and holds no forbidden characters.
pub fn check(value: &str, min: usize, max: usize, lines: Lines) -> Result<(), Invalid> {
    let count = value.chars().count();
    if count < min || count > max {
        return Err(Invalid::owned(format!(
            "must be {min} to {max} characters long"
        )));
    }
    if value.contains('\0') {
        return Err(Invalid::new("must not contain NUL characters"));
    }
    let allowed = |c: char| lines == Lines::Multi && matches!(c, '\n' | '\r' | '\t');
    if value.chars().any(|c| c.is_control() && !allowed(c)) {
        return Err(Invalid::new("must not contain control characters"));
    }
    if min > 0 && value.trim().is_empty() {
        return Err(Invalid::new("must not be blank"));
    }
    Ok(())
}

/// A display name (of an account or a merchant): 1..=255 characters, one line.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// Validates a name.
    pub fn parse(name: impl Into<String>) -> Result<Self, Invalid> {
        let name = name.into();
        check(&name, 1, 255, Lines::Single)?;
        Ok(Self(name))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_characters_not_bytes() {
        assert!(check("é".repeat(255).as_str(), 1, 255, Lines::Single).is_ok());
        assert!(check("é".repeat(256).as_str(), 1, 255, Lines::Single).is_err());
    }

    #[test]
    fn refuses_nul_controls_and_blank() {
        assert!(check("a\0b", 1, 10, Lines::Multi).is_err());
        assert!(check("a\u{7}b", 1, 10, Lines::Multi).is_err());
        assert!(check("a\nb", 1, 10, Lines::Single).is_err());
        assert!(check("a\nb", 1, 10, Lines::Multi).is_ok());
        assert!(check("   ", 1, 10, Lines::Single).is_err());
        assert!(check("", 1, 10, Lines::Single).is_err());
        // Zero-width and right-to-left marks are format characters, not controls: kept as given.
        assert!(check("a\u{200b}\u{202e}b", 1, 10, Lines::Single).is_ok());
    }
}
