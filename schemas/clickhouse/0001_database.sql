-- The database every clickwire table lives in.
CREATE DATABASE IF NOT EXISTS clickwire;
