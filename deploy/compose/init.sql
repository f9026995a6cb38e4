-- The trial's data: a products table Tributary indexes (initial full sync, then live changes).
CREATE TABLE products (
  id serial PRIMARY KEY,
  name text NOT NULL,
  description text,
  price numeric(10, 2)
);
INSERT INTO products (name, description, price) VALUES
  ('Trail runner', 'Light running shoes with a grippy sole for muddy trails', 119.00),
  ('Summit boot', 'Waterproof leather hiking boots for long days in the mountains', 189.00),
  ('City sneaker', 'Canvas sneakers for everyday walking in town', 69.00),
  ('Rain shell', 'Packable waterproof jacket with taped seams', 149.00),
  ('Wool socks', 'Merino hiking socks that stay warm when wet', 19.00);
