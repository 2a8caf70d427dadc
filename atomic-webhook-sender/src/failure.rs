//! The `Failed` text of an attempt that got no answer: a refusal, a timeout or a connection
//! error, said without the URL (it may carry a merchant's token) and without anything from the
//! request (the signature).

use std::error::Error as StdError;

use crate::resolve::Refused;

/// What went wrong, for `SendOutcome::Failed`.
pub(crate) fn describe(error: &reqwest::Error) -> String {
    if let Some(refused) = find::<Refused>(error) {
        return refused.to_string();
    }
    if error.is_timeout() {
        return "timeout".to_owned();
    }
    if error.is_connect() {
        return format!("connection error: {}", causes(error));
    }
    format!("request error: {}", causes(error))
}

/// The first error of type `E` in `error`'s source chain.
fn find<'a, E: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a E> {
    let mut current = Some(error);
    while let Some(cause) = current {
        if let Some(found) = cause.downcast_ref::<E>() {
            return Some(found);
        }
        current = cause.source();
    }
    None
}

/// The causes below reqwest's own message (which names the URL), joined by `": "`.
fn causes(error: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = error.source();
    while let Some(cause) = current {
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        current = cause.source();
    }
    if parts.is_empty() {
        "unknown".to_owned()
    } else {
        parts.join(": ")
    }
}
