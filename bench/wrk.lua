-- Request generator and result writer for the benchmark program (crates/bench).
--
--   WRK_OUT=<out.json> wrk ... -s bench/wrk.lua <url> -- <mode> <threads> <modulus> <offset> <tag>
--
-- Modes:
--   static       GET the URL's path (/, /users, /cache, a static file)
--   page         GET /users?limit=100&after=K, K distinct over [0, modulus)
--   user-hot     GET /users/{id}, id cycling over 1..modulus (a small, warm set)
--   user-cold    GET /users/{id}, id distinct over 1..modulus
--   post         POST /users with a unique email (tag, thread, counter)
--   mixed        per 100 requests: 20 GET /, 40 user-hot (1000 ids), 20 page, 10 GET /users,
--                9 GET /cache, 1 POST (the memory-over-time soak)
--
-- "Distinct": request n of thread t uses index i = offset + n * threads + t and the value
-- (i * step) mod modulus, with step near 0.618 * modulus and coprime to it: a bijection (no value
-- repeats until modulus requests were made) whose consecutive values are spread over the whole
-- table (a Weyl sequence), not neighbours. The bench gives each run its own offset slice, so no
-- run reuses another's keys (no cache hits where a miss is measured).
--
-- done() writes one JSON object to $WRK_OUT: request and error counts, the duration, and latency
-- percentiles from wrk's own histogram (1 us resolution, every request; Debian's wrk does not
-- let a script read the histogram's buckets, so the percentiles are wrk's).

local thread_count = 0

local function gcd(a, b)
   while b ~= 0 do a, b = b, a % b end
   return a
end

function setup(thread)
   thread:set("tid", thread_count)
   thread_count = thread_count + 1
end

function init(args)
   mode = args[1] or "static"
   threads = tonumber(args[2] or "1")
   modulus = tonumber(args[3] or "1")
   offset = tonumber(args[4] or "0")
   tag = args[5] or "x"
   step = math.floor(modulus * 0.6180339887) + 1
   while gcd(step, modulus) ~= 1 do step = step + 1 end
   n = 0
   fixed = wrk.format("GET", wrk.path)
   post_headers = { ["Content-Type"] = "application/json" }
end

local function distinct()
   local i = offset + n * threads + tid
   return (i * step) % modulus
end

local function post()
   local body = string.format(
      '{"name":"Bench %d-%d","email":"bench-%s-%d-%d@example.com"}', tid, n, tag, tid, n)
   return wrk.format("POST", "/users", post_headers, body)
end

local function page()
   return wrk.format("GET", "/users?limit=100&after=" .. string.format("%d", distinct()))
end

local function user(id)
   return wrk.format("GET", "/users/" .. string.format("%d", id))
end

local function mixed()
   local k = n % 100
   if k < 20 then return wrk.format("GET", "/")
   elseif k < 60 then return user((n % 1000) + 1)
   elseif k < 80 then return page()
   elseif k < 90 then return wrk.format("GET", "/users")
   elseif k < 99 then return wrk.format("GET", "/cache")
   else return post() end
end

function request()
   local r
   if mode == "static" then r = fixed
   elseif mode == "page" then r = page()
   elseif mode == "user-hot" then r = user((n % modulus) + 1)
   elseif mode == "user-cold" then r = user(distinct() + 1)
   elseif mode == "post" then r = post()
   elseif mode == "mixed" then r = mixed()
   else error("unknown mode " .. tostring(mode)) end
   n = n + 1
   return r
end

function done(summary, latency, requests)
   -- done() runs in wrk's main Lua state, which never saw init()'s arguments: hence the variable.
   local out = assert(io.open(assert(os.getenv("WRK_OUT"), "WRK_OUT is not set"), "w"))
   local e = summary.errors
   out:write(string.format(
      '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d,"status":%d},' ..
      '"latency_us":{"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p99.9":%d}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      latency.mean, latency.max, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9)))
   out:close()
end
