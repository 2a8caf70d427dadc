//! [`EventStore`] in memory: events are written by the state changes themselves
//! ([`super::store::State::write_events`]); this reads them.

use async_trait::async_trait;

use super::store::{MemoryStore, page_of};
use crate::error::Result;
use crate::event::{Event, EventFilter};
use crate::id::EventId;
use crate::page::{Page, PageRequest};
use crate::ports::EventStore;
use crate::principal::Principal;

#[async_trait]
impl EventStore for MemoryStore {
    async fn event(&self, id: EventId, viewer: Principal) -> Result<Option<Event>> {
        let state = self.lock();
        Ok(state
            .events
            .get(&id)
            .filter(|e| viewer.can_access(e.owner))
            .cloned())
    }

    async fn events(
        &self,
        viewer: Principal,
        filter: &EventFilter,
        page: PageRequest<EventId>,
    ) -> Result<Page<Event>> {
        let state = self.lock();
        page_of(
            &state.events,
            page,
            |e| viewer.can_access(e.owner),
            |e| {
                filter.event_type.is_none_or(|t| t == e.event_type)
                    && filter.created.contains(e.created_at)
            },
        )
    }
}
