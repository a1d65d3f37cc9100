#!/usr/bin/env bash
# Make what the "sasl" compose profile needs (docker-compose.yml): a private CA, the Kafka
# broker's TLS key and certificate in a PKCS#12 keystore, SASL PLAIN passwords, and the files
# the apache/kafka image and the govledger clients read. Everything goes to
# deploy/kafka/secrets/ (git ignores it; never commit it); nothing is downloaded.
#
#   deploy/kafka/make-certs.sh [--force]
#   set -a && . deploy/kafka/secrets/client.env && set +a     # GOVLEDGER_KAFKA_SASL_PASSWORD
#   docker compose --profile sasl up -d --build processor-sasl sequencer-sasl api-sasl
#
# secrets/broker/  -> kafka-sasl:/etc/kafka/secrets (read-only): keystore, its password file,
#                     the JAAS file with the users, the admin client's properties (healthcheck)
# secrets/client/  -> govledger containers:/etc/govledger/kafka (read-only): ca.pem only
# secrets/client.env  the govledger user's password, for the shell that runs compose
#
# Run as root (or with sudo) to hand the broker's files to the container user (uid 1000 in
# apache/kafka) with mode 0400; otherwise they stay yours, mode 0400, and the broker can read
# them only if your uid is 1000. Needs openssl. Certificates are valid 825 days.
set -euo pipefail
umask 077

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${here}/secrets"
broker_host="kafka-sasl"
kafka_uid=1000

if [[ -e "${out}" && "${1:-}" != "--force" ]]; then
  echo "${out} exists; remove it or pass --force to make new secrets" >&2
  exit 2
fi
command -v openssl > /dev/null || { echo "make-certs.sh needs openssl" >&2; exit 2; }
rm -rf "${out}"
mkdir -p "${out}/broker" "${out}/client" "${out}/work"
work="${out}/work"
password() { openssl rand -base64 24 | tr -d '/+=\n'; }

# A private CA: signs the broker certificate; clients trust only it.
openssl req -x509 -newkey rsa:3072 -sha256 -days 825 -nodes -subj "/CN=govledger kafka CA" \
  -keyout "${work}/ca.key" -out "${out}/client/ca.pem" 2> /dev/null
cp "${out}/client/ca.pem" "${out}/broker/ca.pem"

# The broker: key, certificate with its compose host name as subjectAltName (clients check it).
openssl req -newkey rsa:3072 -sha256 -nodes -subj "/CN=${broker_host}" \
  -keyout "${work}/broker.key" -out "${work}/broker.csr" 2> /dev/null
printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\n' "${broker_host}" \
  > "${work}/broker.ext"
openssl x509 -req -sha256 -days 825 -in "${work}/broker.csr" -CA "${out}/client/ca.pem" \
  -CAkey "${work}/ca.key" -CAcreateserial -extfile "${work}/broker.ext" \
  -out "${work}/broker.pem" 2> /dev/null

store_password="$(password)"
openssl pkcs12 -export -name kafka -in "${work}/broker.pem" -inkey "${work}/broker.key" \
  -certfile "${out}/client/ca.pem" -passout "pass:${store_password}" \
  -out "${out}/broker/kafka.keystore.p12"
printf '%s' "${store_password}" > "${out}/broker/keystore_creds"

# SASL PLAIN users: admin (broker to broker, healthcheck) and govledger (the clients).
admin_password="$(password)"
client_password="$(password)"
cat > "${out}/broker/kafka_server_jaas.conf" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin"
  password="${admin_password}"
  user_admin="${admin_password}"
  user_govledger="${client_password}";
};
JAAS
cat > "${out}/broker/admin-client.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="${admin_password}";
ssl.truststore.type=PEM
ssl.truststore.location=/etc/kafka/secrets/ca.pem
PROPS
printf 'GOVLEDGER_KAFKA_SASL_PASSWORD=%s\n' "${client_password}" > "${out}/client.env"

rm -rf "${work}"
chmod 0400 "${out}"/broker/*
chmod 0444 "${out}/client/ca.pem"   # public: the CA certificate
chmod 0755 "${out}" "${out}/broker" "${out}/client"
if [[ "$(id -u)" == "0" ]]; then
  chown -R "${kafka_uid}:${kafka_uid}" "${out}/broker"
fi
echo "wrote ${out}: broker/ (mount into kafka-sasl), client/ca.pem, client.env"
