-- wrk: GET /users?limit=100 with a distinct after= per request over 10^5 users (a Weyl step).
local n = math.random(0, 1000000)
request = function()
  n = n + 7919
  return wrk.format("GET", "/users?limit=100&after=" .. (n % 99800))
end
