-- A CHECK (state IN (three or more values)) makes SQLite build a temporary table of the values
-- each time it writes a row: an ephemeral b-tree, a page allocated and zeroed per insert, about
-- 1.5 µs per event row. The same conditions as chains of equalities cost nothing. The text of a
-- CHECK changes nothing on disk, so it is rewritten in place, the way SQLite's documentation
-- describes for changing constraints (lang_altertable.html, "Making Other Kinds Of Table Schema
-- Changes"); RESET reloads the schema. Connections opened earlier keep the equivalent IN form
-- until they reopen.
PRAGMA writable_schema = ON;

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''open'', ''resolved'', ''cancelled'', ''expired''))',
    'CHECK (state = ''open'' OR state = ''resolved'' OR state = ''cancelled''
                                  OR state = ''expired'')')
WHERE type = 'table' AND name = 'waits';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''buffered'', ''matched'', ''late'', ''unmatched''))',
    'CHECK (state = ''buffered'' OR state = ''matched'' OR state = ''late''
                                  OR state = ''unmatched'')')
WHERE type = 'table' AND name = 'events';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''pending'', ''sending'', ''delivered'',
                         ''delivered_unconfirmed'', ''dead'', ''expired'', ''cancelled''))',
    'CHECK (state = ''pending'' OR state = ''sending'' OR state = ''delivered''
                         OR state = ''delivered_unconfirmed'' OR state = ''dead''
                         OR state = ''expired'' OR state = ''cancelled'')')
WHERE type = 'table' AND name = 'deliveries';

UPDATE sqlite_schema
SET sql = replace(sql,
    'CHECK (state IN (''active'', ''done'', ''stopped''))',
    'CHECK (state = ''active'' OR state = ''done'' OR state = ''stopped'')')
WHERE type = 'table' AND name = 'watches';

PRAGMA writable_schema = RESET;
