"""`make bench`: every SPEC §6 target measured side by side with its baseline in one run.

Modules by concern: `config` (env knobs), `database` (which PostgreSQL, fresh databases,
migrations, bulk loading), `seed` (customers, projections, interactions, survey answers),
`stack` (broker, services, the bare baseline app, memory), `loadgen` (wrk or the Python
fallback), `bare_app` and `raw_consumer` (the baselines), `scenarios` (one function per
target), `report` (table + JSON) and `run` (the order of it all)."""
