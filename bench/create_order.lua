-- wrk script for the create-order scenario: POST /api/v1/orders as the bench
-- user (run.sh adds its bearer token with -H).
wrk.method = "POST"
wrk.body = '{"amount": 5000, "currency": "USD"}'
wrk.headers["Content-Type"] = "application/json"
