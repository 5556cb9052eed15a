-- Run once by the MySQL container at first start (docker-compose.yml):
-- the application user may create and drop the per-test databases.
GRANT ALL PRIVILEGES ON `coupon\_test\_%`.* TO 'application'@'%';
GRANT ALL PRIVILEGES ON `e_commerce_smoke`.* TO 'application'@'%';
FLUSH PRIVILEGES;
