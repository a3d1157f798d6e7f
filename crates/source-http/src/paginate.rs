//! Which page comes next, and the guards that make a looping API an error instead of an
//! endless run: a token, id or URL followed twice, a first record seen on an earlier page, or
//! more than `max_pages` pages.

use std::collections::HashSet;

use reqwest::Url;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::jsonpath::JsonPath;
use crate::spec::PaginationSpec;

/// What one page told about the next.
#[derive(Debug)]
pub struct PageInfo<'a> {
    /// The response document (for token and `has_more` paths).
    pub document: &'a Value,
    /// The response headers (for `Link`).
    pub headers: &'a HeaderMap,
    /// The URL the page came from (relative `Link` targets resolve against it).
    pub url: &'a Url,
    /// Records on the page.
    pub records: usize,
    /// The last record's id field, as text.
    pub last_id: Option<String>,
    /// The first record's raw JSON.
    pub first_record: Option<String>,
}

/// The next request.
#[derive(Debug, Clone, PartialEq)]
pub enum NextPage {
    /// No more pages.
    Done,
    /// The first request's URL with these query parameters set.
    Params(Vec<(String, String)>),
    /// This URL as is (a `Link` header's target).
    Url(Url),
}

/// Pagination state of one chunk.
#[derive(Debug)]
pub struct Pager {
    spec: Option<PaginationSpec>,
    max_pages: u64,
    pages: u64,
    followed: HashSet<String>,
    first_records: HashSet<u64>,
    offset: u64,
    page: u64,
}

impl Pager {
    /// A pager before the first page.
    pub fn new(spec: Option<PaginationSpec>, max_pages: u64) -> Self {
        let page = match &spec {
            Some(PaginationSpec::PageNumber { first_page, .. }) => *first_page,
            _ => 0,
        };
        Pager {
            spec,
            max_pages,
            pages: 0,
            followed: HashSet::new(),
            first_records: HashSet::new(),
            offset: 0,
            page,
        }
    }

    /// Parameters of the first request.
    pub fn first(&self) -> Vec<(String, String)> {
        match &self.spec {
            Some(PaginationSpec::OffsetLimit {
                offset_param,
                limit_param,
                limit,
            }) => vec![
                (offset_param.clone(), "0".into()),
                (limit_param.clone(), limit.to_string()),
            ],
            Some(PaginationSpec::PageNumber { page_param, .. }) => vec![(page_param.clone(), self.page.to_string())],
            _ => vec![],
        }
    }

    fn follow(&mut self, what: &str, value: String) -> Result<String, String> {
        if !self.followed.insert(value.clone()) {
            return Err(format!("pagination loop: {what} `{value}` was already followed"));
        }
        Ok(value)
    }

    /// The request after `page`, or why paging must stop with an error.
    pub fn next(&mut self, page: &PageInfo<'_>) -> Result<NextPage, String> {
        self.pages += 1;
        if let Some(first) = &page.first_record
            && !self.first_records.insert(xxhash_rust::xxh3::xxh3_64(first.as_bytes()))
        {
            return Err(format!(
                "pagination loop: page {} starts with a record an earlier page started with",
                self.pages
            ));
        }
        let Some(spec) = self.spec.clone() else {
            return Ok(NextPage::Done);
        };
        let next = match spec {
            PaginationSpec::NextToken { token_path, param } => {
                let path = JsonPath::parse(&token_path)?;
                match path.select(page.document) {
                    None | Some(Value::Null) => NextPage::Done,
                    Some(Value::String(s)) if s.is_empty() => NextPage::Done,
                    Some(Value::String(s)) => NextPage::Params(vec![(param, self.follow("token", s.clone())?)]),
                    Some(other) => NextPage::Params(vec![(param, self.follow("token", other.to_string())?)]),
                }
            }
            PaginationSpec::LastId {
                param, has_more_path, ..
            } => {
                let path = JsonPath::parse(&has_more_path)?;
                let has_more = match path.select(page.document) {
                    Some(Value::Bool(b)) => *b,
                    None | Some(Value::Null) => false,
                    Some(other) => return Err(format!("`{has_more_path}` is {other}, not a boolean")),
                };
                if !has_more || page.records == 0 {
                    NextPage::Done
                } else {
                    let id = page
                        .last_id
                        .clone()
                        .ok_or_else(|| "has_more is true but the last record has no id".to_string())?;
                    NextPage::Params(vec![(param, self.follow("last id", id)?)])
                }
            }
            PaginationSpec::OffsetLimit {
                offset_param,
                limit_param,
                limit,
            } => {
                if (page.records as u64) < limit {
                    NextPage::Done
                } else {
                    self.offset += limit;
                    NextPage::Params(vec![
                        (offset_param, self.offset.to_string()),
                        (limit_param, limit.to_string()),
                    ])
                }
            }
            PaginationSpec::PageNumber { page_param, .. } => {
                if page.records == 0 {
                    NextPage::Done
                } else {
                    self.page += 1;
                    NextPage::Params(vec![(page_param, self.page.to_string())])
                }
            }
            PaginationSpec::LinkHeader => match next_link(page.headers) {
                None => NextPage::Done,
                Some(target) => {
                    let url = page
                        .url
                        .join(&target)
                        .map_err(|e| format!("Link target `{target}` is not a URL: {e}"))?;
                    self.follow("Link URL", url.to_string())?;
                    NextPage::Url(url)
                }
            },
        };
        if next != NextPage::Done && self.pages >= self.max_pages {
            return Err(format!(
                "more than max_pages = {} pages in one chunk; raise it if the window really holds that many",
                self.max_pages
            ));
        }
        Ok(next)
    }
}

/// The `rel="next"` target of the `Link` headers (RFC 8288).
pub fn next_link(headers: &HeaderMap) -> Option<String> {
    for value in headers.get_all(reqwest::header::LINK) {
        let Ok(text) = value.to_str() else { continue };
        for link in text.split(',') {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let is_next = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("rel=")
                    .map(|r| r.trim_matches('"').split_whitespace().any(|r| r == "next"))
                    .unwrap_or(false)
            });
            if is_next {
                return Some(target.trim_start_matches('<').trim_end_matches('>').to_string());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info<'a>(doc: &'a Value, headers: &'a HeaderMap, url: &'a Url, records: usize, first: &str) -> PageInfo<'a> {
        PageInfo {
            document: doc,
            headers,
            url,
            records,
            last_id: Some(format!("id-{first}")),
            first_record: Some(first.to_string()),
        }
    }

    #[test]
    fn link_headers_are_parsed_like_githubs() {
        let mut h = HeaderMap::new();
        h.insert(
            reqwest::header::LINK,
            r#"<https://api.github.com/repos/x/y/issues?page=2>; rel="next", <https://api.github.com/repos/x/y/issues?page=5>; rel="last""#
                .parse()
                .unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("https://api.github.com/repos/x/y/issues?page=2")
        );
        assert_eq!(next_link(&HeaderMap::new()), None);
    }

    #[test]
    fn a_repeated_token_first_record_or_too_many_pages_is_an_error() {
        let url: Url = "http://h/p".parse().unwrap();
        let h = HeaderMap::new();
        let spec = PaginationSpec::NextToken {
            token_path: "$.next".into(),
            param: "cursor".into(),
        };
        let mut p = Pager::new(Some(spec.clone()), 100);
        let doc = serde_json::json!({"next": "abc"});
        assert_eq!(
            p.next(&info(&doc, &h, &url, 1, "a")).unwrap(),
            NextPage::Params(vec![("cursor".into(), "abc".into())])
        );
        let e = p.next(&info(&doc, &h, &url, 1, "b")).unwrap_err();
        assert!(e.contains("token `abc` was already followed"), "{e}");

        let mut p = Pager::new(
            Some(PaginationSpec::PageNumber {
                page_param: "page".into(),
                first_page: 1,
            }),
            100,
        );
        p.next(&info(&doc, &h, &url, 1, "a")).unwrap();
        let e = p.next(&info(&doc, &h, &url, 1, "a")).unwrap_err();
        assert!(e.contains("starts with a record an earlier page started with"), "{e}");

        let mut p = Pager::new(
            Some(PaginationSpec::PageNumber {
                page_param: "page".into(),
                first_page: 1,
            }),
            2,
        );
        p.next(&info(&doc, &h, &url, 1, "a")).unwrap();
        let e = p.next(&info(&doc, &h, &url, 1, "b")).unwrap_err();
        assert!(e.contains("more than max_pages = 2"), "{e}");
    }
}
