"""The seed's application, rewritten from its description as a baseline for the benchmark.

Flask, psycopg2 and redis-py, as the seed wrote it: a new PostgreSQL connection per request,
`SELECT * FROM users` returned whole as JSON, and `/cache` setting a key on a miss. It is not
product code: the benchmark (crates/bench) runs it on the same PostgreSQL and Redis as the
userstack server to print our ratio on `/`, `/users` and `/cache`.

The seed hard-coded host `db`, database `mydb`, user `postgres`, password `password` and Redis
host `redis`; those stay the defaults, and the environment (PGHOST, PGPORT, PGDATABASE, PGUSER,
PGPASSWORD, REDIS_HOST, REDIS_PORT) points it at the benchmark's servers.

    flask --app flask_app run            # Werkzeug's development server
    gunicorn --workers 5 flask_app:app   # gunicorn
"""

import os

import psycopg2
import redis
from flask import Flask, jsonify

app = Flask(__name__)
cache = redis.Redis(
    host=os.environ.get("REDIS_HOST", "redis"),
    port=int(os.environ.get("REDIS_PORT", "6379")),
)


def get_db_connection():
    return psycopg2.connect(
        host=os.environ.get("PGHOST", "db"),
        port=int(os.environ.get("PGPORT", "5432")),
        database=os.environ.get("PGDATABASE", "mydb"),
        user=os.environ.get("PGUSER", "postgres"),
        password=os.environ.get("PGPASSWORD", "password"),
    )


@app.route("/")
def hello():
    return "Hello, Docker Multi-Container!"


@app.route("/users")
def get_users():
    conn = get_db_connection()
    cur = conn.cursor()
    cur.execute("SELECT * FROM users;")
    users = cur.fetchall()
    cur.close()
    conn.close()
    return jsonify(users)


@app.route("/cache")
def cache_example():
    if cache.exists("my_key"):
        return f"Cache Hit: {cache.get('my_key').decode('utf-8')}"
    cache.set("my_key", "Hello from Redis Cache!")
    return "Cache Miss: Key Set"


if __name__ == "__main__":
    app.run(host="0.0.0.0", port=5000)
