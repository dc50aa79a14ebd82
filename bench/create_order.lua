-- wrk script for the create-order scenario: POST /api/v1/orders as one
-- fixed user. run.sh exports BENCH_USER_ID; the default is the same id.
wrk.method = "POST"
wrk.body = '{"amount": 5000, "currency": "USD"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["x-user-id"] = os.getenv("BENCH_USER_ID") or "0190a5c4-6a1e-7c3b-9f2d-5b8e4a7d1c20"
