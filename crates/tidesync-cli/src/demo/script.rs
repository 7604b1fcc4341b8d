//! The random offline edits of one client: puts, patches and deletes on the shared todo
//! list, some grouped in multi-mutation transactions. Reproducible from the seed.

use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidesync_client::{Client, Doc, RecordKey, StoreError};

use super::setup::{SPACE, TODOS};

/// One local write.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    /// Create or replace a todo.
    Put(RecordKey, Doc),
    /// Change some fields.
    Patch(RecordKey, Doc),
    /// Remove a todo.
    Delete(RecordKey),
}

/// What a client does next: one write, or several in one transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A write in its own transaction.
    One(Write),
    /// Writes the server applies all or none.
    Tx(Vec<Write>),
}

/// The generator of one client's edits. Each client owns the todos it creates (ids
/// `<client>-<n>`), so random edits never contest each other; the demo stages its conflict on
/// purpose.
#[derive(Debug)]
pub struct Script {
    rng: StdRng,
    me: String,
    live: Vec<String>,
    created: u64,
}

const TITLES: [&str; 8] = [
    "buy milk",
    "book the venue",
    "call the caterer",
    "water the plants",
    "fix the bike",
    "write the report",
    "pay the invoice",
    "walk the dog",
];

impl Script {
    /// The script of client `me`, from the run's seed.
    pub fn new(seed: u64, index: usize, me: &str) -> Script {
        Script {
            rng: StdRng::seed_from_u64(
                seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            me: me.to_owned(),
            live: Vec::new(),
            created: 0,
        }
    }

    /// The next step, using at most `budget` (>= 1) writes.
    pub fn next_step(&mut self, budget: u64) -> Step {
        if budget >= 2 && self.rng.random_bool(0.2) {
            let n = self.rng.random_range(2..=budget.min(4));
            Step::Tx((0..n).map(|_| self.next_write()).collect())
        } else {
            Step::One(self.next_write())
        }
    }

    fn next_write(&mut self) -> Write {
        let roll: f64 = self.rng.random();
        if self.live.is_empty() || roll < 0.4 {
            return self.create();
        }
        let pick = self.rng.random_range(0..self.live.len());
        let id = self.live[pick].clone();
        let key = key(&id);
        if roll < 0.85 {
            let fields = match self.rng.random_range(0..3) {
                0 => json!({"done": true}),
                1 => json!({"done": false, "priority": self.rng.random_range(1..=3)}),
                _ => json!({"title": self.title()}),
            };
            Write::Patch(key, doc(fields))
        } else {
            self.live.swap_remove(pick);
            Write::Delete(key)
        }
    }

    fn create(&mut self) -> Write {
        self.created += 1;
        let id = format!("{}-{}", self.me, self.created);
        self.live.push(id.clone());
        let title = self.title();
        Write::Put(
            key(&id),
            doc(json!({"title": title, "done": false, "by": self.me})),
        )
    }

    fn title(&mut self) -> String {
        TITLES[self.rng.random_range(0..TITLES.len())].to_owned()
    }
}

/// Runs `ops` writes of `script` on `client`, counting them in `done`.
pub fn run(client: &Client, script: &mut Script, ops: u64, done: &AtomicU64) -> anyhow::Result<()> {
    let mut left = ops;
    while left > 0 {
        let step = script.next_step(left);
        let n = match step {
            Step::One(write) => {
                apply_one(client, write)?;
                1
            }
            Step::Tx(writes) => {
                let n = writes.len() as u64;
                client.transaction(|tx| {
                    for write in writes {
                        match write {
                            Write::Put(k, d) => tx.put(&k, d)?,
                            Write::Patch(k, d) => tx.patch(&k, d)?,
                            Write::Delete(k) => tx.delete(&k)?,
                        };
                    }
                    Ok::<_, StoreError>(())
                })?;
                n
            }
        };
        left -= n;
        done.fetch_add(n, Ordering::Relaxed);
    }
    Ok(())
}

fn apply_one(client: &Client, write: Write) -> anyhow::Result<()> {
    match write {
        Write::Put(k, d) => client.put(&k, d)?,
        Write::Patch(k, d) => client.patch(&k, d)?,
        Write::Delete(k) => client.delete(&k)?,
    };
    Ok(())
}

/// A todo's key.
pub fn key(id: &str) -> RecordKey {
    record_key(TODOS, id)
}

/// A key in the demo space. The demo's names are valid by construction.
pub fn record_key(collection: &str, id: &str) -> RecordKey {
    #[allow(clippy::expect_used)]
    RecordKey::parse(SPACE, collection, id).expect("the demo's keys are valid")
}

/// A JSON object literal as a document.
pub fn doc(value: serde_json::Value) -> Doc {
    match value {
        serde_json::Value::Object(map) => map,
        _ => Doc::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(seed: u64) -> Vec<Step> {
        let mut script = Script::new(seed, 0, "c1");
        let mut left = 100u64;
        let mut out = Vec::new();
        while left > 0 {
            let step = script.next_step(left);
            left -= match &step {
                Step::One(_) => 1,
                Step::Tx(w) => w.len() as u64,
            };
            out.push(step);
        }
        out
    }

    #[test]
    fn the_same_seed_gives_the_same_edits_and_the_budget_is_exact() {
        assert_eq!(steps(7), steps(7));
        assert_ne!(steps(7), steps(8));
        let all = steps(7);
        assert!(
            all.iter().any(|s| matches!(s, Step::Tx(_))),
            "some transactions"
        );
        for kind in ["put", "patch", "delete"] {
            assert!(
                all.iter().any(|s| match s {
                    Step::One(w) => kind_of(w) == kind,
                    Step::Tx(ws) => ws.iter().any(|w| kind_of(w) == kind),
                }),
                "{kind}"
            );
        }
    }

    fn kind_of(w: &Write) -> &'static str {
        match w {
            Write::Put(..) => "put",
            Write::Patch(..) => "patch",
            Write::Delete(..) => "delete",
        }
    }
}
