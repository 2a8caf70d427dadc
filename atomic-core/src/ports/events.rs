//! [`EventStore`]: events as requests read them. Events are written by the store itself, in
//! the transaction of the change they tell ([`crate::event`]); no port writes one.

use async_trait::async_trait;

use crate::error::Result;
use crate::event::{Event, EventFilter};
use crate::id::EventId;
use crate::page::{Page, PageRequest};
use crate::principal::Principal;

/// Reads of events: a merchant sees its accounts' events, the platform sees all.
#[cfg_attr(any(test, feature = "mocks"), mockall::automock)]
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// The event, if `viewer` may see it.
    async fn event(&self, id: EventId, viewer: Principal) -> Result<Option<Event>>;

    /// Events `viewer` may see that pass `filter`, newest first. A cursor the viewer cannot
    /// see is [`crate::Error::UnknownCursor`].
    async fn events(
        &self,
        viewer: Principal,
        filter: &EventFilter,
        page: PageRequest<EventId>,
    ) -> Result<Page<Event>>;
}
