//! The JSON form of a query, parsed and checked: every error names the offending part.

use serde_json::{Map, Value};
use tidesync_protocol::{CollectionName, SpaceName};

use super::{
    Cond, FieldPath, Query, QueryError, Selector, SortKey, MAX_DEPTH, MAX_IN, MAX_SORT_KEYS,
};

pub(super) fn query(
    space: SpaceName,
    collection: CollectionName,
    json: &Value,
) -> Result<Query, QueryError> {
    let Value::Object(members) = json else {
        return Err(QueryError::at(
            "query",
            "a query is a JSON object like {\"selector\": {...}, \"sort\": [...], \"limit\": 50}",
        ));
    };
    let mut q = Query::all(space, collection);
    for (name, value) in members {
        match name.as_str() {
            "selector" => q.selector = selector(value, "selector", 0)?,
            "sort" => q.sort = sort(value)?,
            "limit" => {
                q.limit = Some(
                    value
                        .as_u64()
                        .filter(|n| *n > 0)
                        .map(|n| n as usize)
                        .ok_or_else(|| QueryError::at("limit", "the limit is a positive integer"))?,
                );
                q.page_size()?;
            }
            "fields" => q.fields = Some(fields(value)?),
            "after" => {
                q.after = Some(
                    value
                        .as_str()
                        .ok_or_else(|| {
                            QueryError::at("after", "\"after\" is the \"next\" string of the previous page")
                        })?
                        .to_owned(),
                );
            }
            other => {
                return Err(QueryError::at(
                    other,
                    "unknown member; a query has \"selector\", \"sort\", \"limit\", \"fields\" and \"after\"",
                ))
            }
        }
    }
    Ok(q)
}

fn deeper(depth: usize, at: &str) -> Result<usize, QueryError> {
    if depth >= MAX_DEPTH {
        return Err(QueryError::at(
            at,
            format!("selectors nest at most {MAX_DEPTH} levels of $and, $or and $not"),
        ));
    }
    Ok(depth + 1)
}

pub(super) fn selector(json: &Value, at: &str, depth: usize) -> Result<Selector, QueryError> {
    let Value::Object(members) = json else {
        return Err(QueryError::at(at, "a selector is a JSON object"));
    };
    let mut parts = Vec::with_capacity(members.len());
    for (name, value) in members {
        let here = format!("{at}.{name}");
        parts.push(match name.as_str() {
            "$and" | "$or" => {
                let depth = deeper(depth, &here)?;
                let Value::Array(items) = value else {
                    return Err(QueryError::at(here, format!("{name} takes an array of selectors")));
                };
                if items.is_empty() {
                    return Err(QueryError::at(here, format!("{name} needs at least one selector")));
                }
                let items = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| selector(item, &format!("{here}[{i}]"), depth))
                    .collect::<Result<Vec<_>, _>>()?;
                if name == "$and" {
                    Selector::And(items)
                } else {
                    Selector::Or(items)
                }
            }
            "$not" => Selector::Not(Box::new(selector(value, &here, deeper(depth, &here)?)?)),
            op if op.starts_with('$') => {
                return Err(QueryError::at(
                    here,
                    "unknown operator at the top of a selector; supported: $and, $or, $not, or a field name",
                ))
            }
            field => Selector::Field(
                FieldPath::parse(field).map_err(|e| QueryError::at(here.clone(), e.problem))?,
                condition(value, &here, depth)?,
            ),
        });
    }
    Ok(match parts.len() {
        0 => Selector::All,
        1 => parts.pop().unwrap_or(Selector::All),
        _ => Selector::And(parts),
    })
}

/// Whether `map` is an operator object (`{"$gt": 1}`), not a document to compare with.
fn is_operators(map: &Map<String, Value>, at: &str) -> Result<bool, QueryError> {
    let ops = map.keys().filter(|k| k.starts_with('$')).count();
    if ops > 0 && ops < map.len() {
        return Err(QueryError::at(
            at,
            "an object mixes operators ($...) and field names; use {\"$eq\": {...}} to compare with an object",
        ));
    }
    Ok(ops > 0)
}

fn condition(json: &Value, at: &str, depth: usize) -> Result<Cond, QueryError> {
    let map = match json {
        Value::Object(map) if is_operators(map, at)? => map,
        // A plain value: equality.
        value => return Ok(Cond::Eq(value.clone())),
    };
    let mut conds = Vec::with_capacity(map.len());
    for (op, operand) in map {
        let here = format!("{at}.{op}");
        conds.push(match op.as_str() {
            "$eq" => Cond::Eq(operand.clone()),
            "$ne" => Cond::Ne(operand.clone()),
            "$gt" => Cond::Gt(ordered(operand, &here)?),
            "$gte" => Cond::Gte(ordered(operand, &here)?),
            "$lt" => Cond::Lt(ordered(operand, &here)?),
            "$lte" => Cond::Lte(ordered(operand, &here)?),
            "$in" => Cond::In(list(operand, &here)?),
            "$nin" => Cond::Nin(list(operand, &here)?),
            "$exists" => Cond::Exists(
                operand
                    .as_bool()
                    .ok_or_else(|| QueryError::at(&here, "$exists takes true or false"))?,
            ),
            "$beginsWith" => Cond::BeginsWith(
                operand
                    .as_str()
                    .ok_or_else(|| QueryError::at(&here, "$beginsWith takes a string"))?
                    .to_owned(),
            ),
            "$not" => {
                let depth = deeper(depth, &here)?;
                match operand {
                    Value::Object(m) if is_operators(m, &here)? => {
                        Cond::Not(Box::new(condition(operand, &here, depth)?))
                    }
                    _ => {
                        return Err(QueryError::at(
                            here,
                            "$not on a field takes an operator object, like {\"$not\": {\"$gt\": 5}}",
                        ))
                    }
                }
            }
            _ => {
                return Err(QueryError::at(
                    here,
                    "unknown operator; supported: $eq $ne $gt $gte $lt $lte $in $nin $exists $beginsWith $not",
                ))
            }
        });
    }
    Ok(match conds.len() {
        1 => conds.pop().unwrap_or(Cond::All(Vec::new())),
        _ => Cond::All(conds),
    })
}

fn ordered(operand: &Value, at: &str) -> Result<Value, QueryError> {
    match operand {
        Value::Number(_) | Value::String(_) => Ok(operand.clone()),
        _ => Err(QueryError::at(
            at,
            "a comparison takes a number or a string",
        )),
    }
}

fn list(operand: &Value, at: &str) -> Result<Vec<Value>, QueryError> {
    match operand {
        Value::Array(items) if items.len() <= MAX_IN => Ok(items.clone()),
        Value::Array(_) => Err(QueryError::at(at, format!("at most {MAX_IN} values"))),
        _ => Err(QueryError::at(at, "takes an array of values")),
    }
}

fn sort(json: &Value) -> Result<Vec<SortKey>, QueryError> {
    sort_keys(json, "sort")
}

/// Fields with directions, as a query's `sort` (and an index's `fields`) lists them; `name`
/// is where errors point.
pub(super) fn sort_keys(json: &Value, name: &str) -> Result<Vec<SortKey>, QueryError> {
    let Value::Array(items) = json else {
        return Err(QueryError::at(
            name,
            format!("{name} is an array like [\"due\", {{\"title\": \"desc\"}}]"),
        ));
    };
    if items.is_empty() && name != "sort" {
        return Err(QueryError::at(
            name,
            format!("{name} lists at least one field"),
        ));
    }
    if items.len() > MAX_SORT_KEYS {
        return Err(QueryError::at(
            name,
            format!("at most {MAX_SORT_KEYS} fields"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{name}[{i}]");
            let (field, descending) = match item {
                Value::String(field) => (field.as_str(), false),
                Value::Object(m) if m.len() == 1 => {
                    let (field, direction) = m
                        .iter()
                        .next()
                        .ok_or_else(|| QueryError::at(&at, "empty"))?;
                    let descending = match direction.as_str() {
                        Some("asc") => false,
                        Some("desc") => true,
                        _ => {
                            return Err(QueryError::at(
                                at,
                                "unknown sort direction; use \"asc\" or \"desc\"",
                            ))
                        }
                    };
                    (field.as_str(), descending)
                }
                _ => {
                    return Err(QueryError::at(
                        at,
                        "a sort key is a field name or {\"field\": \"asc\" | \"desc\"}",
                    ))
                }
            };
            let field = FieldPath::parse(field).map_err(|e| QueryError::at(at, e.problem))?;
            Ok(SortKey { field, descending })
        })
        .collect()
}

fn fields(json: &Value) -> Result<Vec<FieldPath>, QueryError> {
    let Value::Array(items) = json else {
        return Err(QueryError::at(
            "fields",
            "fields is an array of field names",
        ));
    };
    if items.len() > 64 {
        return Err(QueryError::at("fields", "at most 64 fields"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("fields[{i}]");
            let name = item
                .as_str()
                .ok_or_else(|| QueryError::at(&at, "a field name is a string"))?;
            FieldPath::parse(name).map_err(|e| QueryError::at(at, e.problem))
        })
        .collect()
}
