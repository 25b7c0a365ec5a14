//! `evalloop serve` on a PostgreSQL store (the schema `EVALLOOP_TEST_PG` names, as
//! `scripts/with-postgres.sh` sets it): the same API contract as on SQLite. Skipped, and said so
//! on stderr, without `EVALLOOP_TEST_PG`.

use crate::serve_support::*;

#[test]
fn api_contract_on_postgres() {
    let Some(pg) = PgSchema::new("contract") else { return };
    api_contract(&pg.url);
}
