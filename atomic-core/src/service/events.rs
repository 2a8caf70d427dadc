//! Reading events: a merchant sees the events of its accounts, the platform sees all.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::event::{Event, EventFilter};
use crate::id::EventId;
use crate::page::{Page, PageRequest};
use crate::ports::{EventStore, Ports};
use crate::principal::Principal;

/// Events.
#[derive(Clone)]
pub struct EventService {
    events: Arc<dyn EventStore>,
}

impl EventService {
    pub(super) fn new(ports: &Ports) -> Self {
        Self {
            events: ports.store.events().clone(),
        }
    }

    /// The event, if the caller may see it.
    pub async fn get(&self, caller: Principal, id: EventId) -> Result<Event> {
        self.events.event(id, caller).await?.ok_or(Error::NotFound)
    }

    /// Events the caller may see that pass `filter`, newest first.
    pub async fn list(
        &self,
        caller: Principal,
        filter: &EventFilter,
        page: PageRequest<EventId>,
    ) -> Result<Page<Event>> {
        self.events.events(caller, filter, page).await
    }
}
