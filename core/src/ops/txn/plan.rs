//! A dispatch plan for transactional requests that carry the keys routed to one region.

use bytes::Bytes;

use crate::error::Error;
use crate::rpc::{StoreRequest, StoreResponse};
use crate::sender::Route;
use crate::sender::dispatch::{Items, Plan};

/// How a per-region request takes its keys.
pub(crate) type SetKeys = fn(&mut StoreRequest, Vec<Bytes>);

/// One request per region, cloned from a prototype and (when `set_keys` is given) carrying
/// that region's keys; every answer is kept with the items it answers.
#[derive(Debug)]
pub(crate) struct KeyedPlan {
    /// Request keys, indexed by item.
    keys: Vec<Bytes>,
    prototype: StoreRequest,
    set_keys: Option<SetKeys>,
    /// Answers without region error, in arrival order.
    pub(crate) answers: Vec<Answer>,
}

/// One answer, with the items it covers and the route it came back from.
#[derive(Debug)]
pub(crate) struct Answer {
    /// The items the request carried.
    pub(crate) items: Items,
    /// Where it went (the region's boundaries tell where a range walk goes next).
    pub(crate) route: Route,
    /// The response, without region error.
    pub(crate) response: Box<StoreResponse>,
}

impl KeyedPlan {
    /// Requests like `prototype`, each given its region's keys through `set_keys`.
    pub(crate) fn with_keys(keys: Vec<Bytes>, prototype: StoreRequest, set_keys: SetKeys) -> Self {
        Self {
            keys,
            prototype,
            set_keys: Some(set_keys),
            answers: Vec::new(),
        }
    }

    /// One `prototype` per region the keys fall in, without keys (region-wide requests).
    pub(crate) fn per_region(keys: Vec<Bytes>, prototype: StoreRequest) -> Self {
        Self {
            keys,
            prototype,
            set_keys: None,
            answers: Vec::new(),
        }
    }

    /// The request keys of `items`.
    pub(crate) fn keys_of(&self, items: &[usize]) -> Vec<Bytes> {
        items
            .iter()
            .filter_map(|&item| self.keys.get(item).cloned())
            .collect()
    }

    /// Takes the answers collected so far.
    pub(crate) fn take_answers(&mut self) -> Vec<Answer> {
        std::mem::take(&mut self.answers)
    }
}

impl Plan for KeyedPlan {
    fn build(
        &mut self,
        items: &[usize],
        _route: &Route,
        send: &mut dyn FnMut(Items, Box<StoreRequest>),
    ) {
        let mut request = self.prototype.clone();
        if let Some(set_keys) = self.set_keys {
            set_keys(&mut request, self.keys_of(items));
        }
        send(Items::from_slice(items), Box::new(request));
    }

    fn absorb(
        &mut self,
        items: &[usize],
        route: &Route,
        response: Box<StoreResponse>,
    ) -> Result<(), Error> {
        if !response.matches(&self.prototype) {
            return Err(Error::UnexpectedResponse(format!(
                "mismatched response {response:?}"
            )));
        }
        self.answers.push(Answer {
            items: Items::from_slice(items),
            route: route.clone(),
            response,
        });
        Ok(())
    }
}
