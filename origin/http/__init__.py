"""HTTP: routes, the one error→status middleware, ranges, CORS, the licence proxy."""
