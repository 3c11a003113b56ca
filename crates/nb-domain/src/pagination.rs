//! Cursor pagination for lists that grow while they are read (keys, generations): newest
//! first, by creation time then id, so a page boundary never moves when new items arrive.

use base64::Engine as _;
use time::OffsetDateTime;
use uuid::Uuid;

pub const DEFAULT_PAGE_SIZE: u16 = 20;
pub const MAX_PAGE_SIZE: u16 = 100;

/// Where the next page starts: strictly after (older than) this item. Opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: OffsetDateTime,
    pub id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not one this API handed out")]
pub struct InvalidCursor;

impl Cursor {
    /// URL-safe base64 of `<unix microseconds>.<uuid>`.
    pub fn encode(&self) -> String {
        let micros = self.created_at.unix_timestamp_nanos() / 1_000;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{micros}.{}", self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, InvalidCursor> {
        if raw.len() > 128 {
            return Err(InvalidCursor);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| InvalidCursor)?;
        let text = std::str::from_utf8(&bytes).map_err(|_| InvalidCursor)?;
        let (micros, id) = text.split_once('.').ok_or(InvalidCursor)?;
        let micros: i128 = micros.parse().map_err(|_| InvalidCursor)?;
        let created_at =
            OffsetDateTime::from_unix_timestamp_nanos(micros * 1_000).map_err(|_| InvalidCursor)?;
        Ok(Self {
            created_at,
            id: Uuid::parse_str(id).map_err(|_| InvalidCursor)?,
        })
    }
}

/// Which page to read: at most `limit` items, after `after` (from the start when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u16,
    pub after: Option<Cursor>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPageRequest {
    #[error("limit must be between 1 and {MAX_PAGE_SIZE}")]
    Limit,
    #[error(transparent)]
    Cursor(#[from] InvalidCursor),
}

impl InvalidPageRequest {
    /// The query parameter at fault.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Cursor(_) => "cursor",
        }
    }
}

impl PageRequest {
    pub fn parse(limit: Option<u16>, cursor: Option<&str>) -> Result<Self, InvalidPageRequest> {
        let limit = limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(InvalidPageRequest::Limit);
        }
        let after = cursor.map(Cursor::decode).transpose()?;
        Ok(Self { limit, after })
    }

    pub fn first(limit: u16) -> Self {
        Self { limit, after: None }
    }
}

/// One page, and where the next starts when there may be more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<Cursor>,
}

impl<T> Page<T> {
    /// From up to `limit + 1` items read newest first: the extra one only says there is more.
    pub fn from_overfetch(mut items: Vec<T>, limit: u16, cursor_of: impl Fn(&T) -> Cursor) -> Self {
        let more = items.len() > usize::from(limit);
        items.truncate(usize::from(limit));
        let next = if more {
            items.last().map(cursor_of)
        } else {
            None
        };
        Self { items, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let cursor = Cursor {
            created_at: datetime!(2026-11-25 10:00:00.123456 UTC),
            id: Uuid::from_u128(42),
        };
        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
        for bad in ["", "!!!", "bm90IGEgY3Vyc29y", &"A".repeat(200)] {
            assert_eq!(Cursor::decode(bad), Err(InvalidCursor), "{bad}");
        }
    }

    #[test]
    fn page_requests_are_bounded() {
        assert_eq!(
            PageRequest::parse(None, None).unwrap().limit,
            DEFAULT_PAGE_SIZE
        );
        assert_eq!(
            PageRequest::parse(Some(0), None),
            Err(InvalidPageRequest::Limit)
        );
        assert_eq!(
            PageRequest::parse(Some(101), None),
            Err(InvalidPageRequest::Limit)
        );
        assert_eq!(
            PageRequest::parse(None, Some("x")).unwrap_err().field(),
            "cursor"
        );
    }

    #[test]
    fn an_extra_item_means_a_next_page() {
        let cursor = |n: &u128| Cursor {
            created_at: OffsetDateTime::UNIX_EPOCH,
            id: Uuid::from_u128(*n),
        };
        let page = Page::from_overfetch(vec![5, 4, 3], 2, cursor);
        assert_eq!(page.items, [5, 4]);
        assert_eq!(page.next.map(|c| c.id), Some(Uuid::from_u128(4)));
        let last = Page::from_overfetch(vec![2, 1], 2, cursor);
        assert_eq!(last.next, None);
    }
}
