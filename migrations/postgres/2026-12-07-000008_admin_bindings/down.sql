DROP TABLE admin_bindings;
