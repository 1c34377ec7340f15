-- A page of items as one row, for webapp.items: the snapshot it was read in, its items as
-- a JSON array, its lowest and highest id, and whether items below and above it exist (the
-- table's min and max id: one probe of the primary key's index each, no COUNT, no scan).
-- Oldest first from above `bound` (skipping `skip` rows: the deprecated offset), or newest
-- first from `bound` down.
--
-- `held` is the snapshot of the copy of this page the caller keeps (webapp.snapshotcache):
-- while it is still the database's, the answer is no row, and the page's query is neither
-- run nor started. That is why this is a function and not a plain statement: PostgreSQL
-- starts the executor of a statement that could read the table, opening and locking its
-- relations and indexes, on every execution, even when a condition it tests first rules
-- every scan out; that start made up most of the database's time for a page served again.
--
-- The release before a change of this function may still be calling it: a new behaviour
-- or new columns get a function of a new name (dropped a release later), and a body
-- replaced in place keeps STABLE (CREATE OR REPLACE without it makes the function
-- VOLATILE: its statements would then read a later snapshot than the one it answers).
--
-- STABLE: the snapshot compared and the rows read are the calling statement's, so a page
-- is always exactly the rows of the snapshot it is kept with. On a standby the snapshot
-- does not list the transactions in progress, so it cannot tell a change: NULL, nothing is
-- kept (a snapshot held from a primary never equals a standby's: the start times differ).
-- The start time tells a restored or failed-over server, which may hand out the same
-- transaction numbers again, from the one the page was read on.
CREATE FUNCTION items_page(newest_first boolean, bound bigint, size integer, skip integer, held text)
    RETURNS TABLE (
        snapshot   text,
        items      text,
        first_id   bigint,
        last_id    bigint,
        has_lower  boolean,
        has_higher boolean
    )
    LANGUAGE plpgsql
    STABLE
AS $$
DECLARE
    current_snapshot text := CASE WHEN NOT pg_is_in_recovery() THEN
        pg_current_snapshot()::text || '@' || extract(epoch FROM pg_postmaster_start_time())
    END;
BEGIN
    IF held = current_snapshot THEN
        RETURN;
    END IF;
    -- One branch runs: the other's condition is a parameter, tested once before its scan.
    -- The parameters are qualified: a column of that name would otherwise be ambiguous.
    RETURN QUERY
    SELECT current_snapshot,
           coalesce('[' || string_agg(page.doc, ',' ORDER BY page.sort_key) || ']', '[]'),
           min(page.id),
           max(page.id),
           coalesce(min(page.id) > (SELECT min(i.id) FROM items AS i), FALSE),
           coalesce(max(page.id) < (SELECT max(i.id) FROM items AS i), FALSE)
    FROM (
        (SELECT i.id, i.doc, -i.id AS sort_key FROM items AS i
          WHERE items_page.newest_first AND i.id <= items_page.bound
          ORDER BY i.id DESC LIMIT items_page.size)
        UNION ALL
        (SELECT i.id, i.doc, i.id FROM items AS i
          WHERE NOT items_page.newest_first AND i.id > items_page.bound
          ORDER BY i.id LIMIT items_page.size OFFSET items_page.skip)
    ) AS page;
END
$$;
