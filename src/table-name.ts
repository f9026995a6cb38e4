/**
 * Table names, from the configuration to every statement. A lens's `table` is parsed once by
 * its source spec's `qualifyTable` (`parseTableName`) into the canonical text form
 * (`formatTableName`) that `LensConfig.table` holds and every consumer splits the same way
 * (`splitTableName`):
 *
 * - `schema.table` when neither part needs quoting (no `.`, whitespace or quote character);
 * - otherwise each part that does in the database's quotes, with the quote doubled inside:
 *   `"Sales"."Order Items"`, `public."my.table"` (Postgres), `` shop.`Order Items` `` (MySQL).
 *
 * An unquoted part is taken as written (no case folding): `Sales.Orders` is the table `Orders`
 * of schema `Sales`, as Tributary always read it. Quoted and plain spellings of the same name
 * give the same canonical form (`"public"."items"` is `public.items`).
 */

/** The identifier quote of a database: `"` for Postgres, `` ` `` for MySQL. */
export type Quote = '"' | '`';

export interface TableName {
  /** Undefined when the configuration named the table alone (the source supplies the schema). */
  schema?: string;
  name: string;
}

/** JSON Schema pattern of a table name in either quoting (the source's parser decides). */
export const TABLE_NAME_PATTERN = '^(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|[^.\\s"`]+)(?:\\.(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|[^.\\s"`]+))?$';
export const TABLE_NAME_EXPECTED =
  'a table name: table or schema.table, a part with spaces, dots or quotes in double quotes for Postgres ("Sales"."Order Items") ' +
  'or backticks for MySQL, a quote inside doubled';

const plain = (quote: Quote) => (quote === '"' ? /^[^.\s"]+$/ : /^[^.\s`]+$/);

/** Parses `table`, `schema.table` or their quoted forms; undefined when `text` is not one. */
export function parseTableName(text: string, quote: Quote): TableName | undefined {
  const parts: string[] = [];
  let at = 0;
  while (at <= text.length) {
    let part: string;
    if (text[at] === quote) {
      let end = at + 1;
      part = '';
      for (;;) {
        const close = text.indexOf(quote, end);
        if (close < 0) return undefined;
        part += text.slice(end, close);
        if (text[close + 1] !== quote) {
          at = close + 1;
          break;
        }
        part += quote;
        end = close + 2;
      }
      if (part === '') return undefined;
    } else {
      const dot = text.indexOf('.', at);
      part = text.slice(at, dot < 0 ? text.length : dot);
      if (!plain(quote).test(part)) return undefined;
      at += part.length;
    }
    parts.push(part);
    if (at === text.length) break;
    if (text[at] !== '.') return undefined;
    at++;
  }
  if (parts.length === 1) return { name: parts[0] };
  if (parts.length === 2) return { schema: parts[0], name: parts[1] };
  return undefined;
}

/** The canonical text of a qualified table name (see the module comment). */
export function formatTableName(table: { schema: string; name: string }, quote: Quote): string {
  return `${formatPart(table.schema, quote)}.${formatPart(table.name, quote)}`;
}

function formatPart(part: string, quote: Quote): string {
  return plain(quote).test(part) ? part : quote + part.split(quote).join(quote + quote) + quote;
}

/** Splits a canonical (qualified) table name; throws on anything else, a programming error. */
export function splitTableName(canonical: string, quote: Quote): { schema: string; name: string } {
  const parsed = parseTableName(canonical, quote);
  if (!parsed?.schema) throw new Error(`not a qualified table name: ${canonical}`);
  return { schema: parsed.schema, name: parsed.name };
}

/** `table` qualified with `defaultSchema` when it names no schema, in canonical form; undefined when malformed. */
export function qualifyTableName(table: string, defaultSchema: string, quote: Quote): string | undefined {
  const parsed = parseTableName(table, quote);
  return parsed && formatTableName({ schema: parsed.schema ?? defaultSchema, name: parsed.name }, quote);
}

/** Lenses of a source whose `table` its parser cannot read (e.g. backticks on Postgres), as config problems. */
export function tableNameProblems(lenses: Array<[string, Record<string, unknown>]>, quote: Quote): Array<{ path: string[]; message: string }> {
  const other = quote === '"' ? 'backticks (MySQL)' : 'double quotes (Postgres)';
  return lenses
    .filter(([, lens]) => typeof lens.table === 'string' && !parseTableName(lens.table, quote))
    .map(([name, lens]) => ({
      path: ['lenses', name, 'table'],
      message: `"${String(lens.table)}" is not a table name of this source: quote a part with ${quote === '"' ? 'double quotes' : 'backticks'}, not ${other}`,
    }));
}

/**
 * A column name from the configuration (`primaryKey`, `fields`, `metadata`,
 * `changeTrackingColumn`): taken as written, except that one layer of double quotes or
 * backticks around the whole name is removed (`'"Order Id"'` is the column `Order Id`, a
 * doubled quote inside is one). Tributary always quotes column names in SQL.
 */
export function columnName(text: string): string {
  for (const quote of ['"', '`'] as const) {
    const quoted = new RegExp(`^${quote}((?:[^${quote}]|${quote}${quote})+)${quote}$`).exec(text);
    if (quoted) return quoted[1].split(quote + quote).join(quote);
  }
  return text;
}
