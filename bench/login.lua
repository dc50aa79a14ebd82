-- wrk script for the login scenario: POST /api/v1/auth/login as the bench
-- user (run.sh registers it and passes the credentials in the environment).
-- Every request verifies an argon2id hash: this measures sign-in capacity.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email": "%s", "password": "%s"}',
    os.getenv("BENCH_EMAIL") or "bench@example.com",
    os.getenv("BENCH_PASSWORD") or "bench-password-long-enough")
