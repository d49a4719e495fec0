-- Request generator and result reporter for bench/run.sh.
--
--   wrk ... -s bench/wrk.lua <url> -- <mode> <threads> <modulus> <offset> <tag>
--
-- Modes:
--   static       GET the URL's path (/, /users, /cache)
--   page         GET /users?limit=100&after=K, K distinct over [0, modulus)
--   user-hot     GET /users/{id}, id cycling over 1..modulus (a small, warm set)
--   user-cold    GET /users/{id}, id distinct over 1..modulus
--   post         POST /users with a unique email (tag, thread, counter)
--
-- "Distinct": request n of thread t uses index i = offset + n * threads + t and the value
-- (i * step) mod modulus, with step near 0.618 * modulus and coprime to it: a bijection (no value
-- repeats until modulus requests were made) whose consecutive values are spread over the whole
-- table (a Weyl sequence), not neighbours. run.sh gives each run its own offset slice, so no run
-- reuses another's keys (no cache hits where a miss is measured).
--
-- done() prints one machine-readable line starting with RESULT.

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
   if mode == "static" then
      fixed = wrk.format("GET", wrk.path)
   elseif mode == "post" then
      post_headers = { ["Content-Type"] = "application/json" }
   end
end

local function distinct()
   local i = offset + n * threads + tid
   n = n + 1
   return (i * step) % modulus
end

function request()
   if mode == "static" then
      return fixed
   elseif mode == "page" then
      return wrk.format("GET", "/users?limit=100&after=" .. string.format("%d", distinct()))
   elseif mode == "user-hot" then
      local id = (n % modulus) + 1
      n = n + 1
      return wrk.format("GET", "/users/" .. string.format("%d", id))
   elseif mode == "user-cold" then
      return wrk.format("GET", "/users/" .. string.format("%d", distinct() + 1))
   elseif mode == "post" then
      n = n + 1
      local body = string.format(
         '{"name":"Bench %d-%d","email":"bench-%s-%d-%d@example.com"}', tid, n, tag, tid, n)
      return wrk.format("POST", "/users", post_headers, body)
   end
   error("unknown mode " .. tostring(mode))
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d " ..
      "connect=%d read=%d write=%d timeout=%d status=%d\n",
      summary.requests, summary.duration,
      latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
      e.connect, e.read, e.write, e.timeout, e.status))
end
