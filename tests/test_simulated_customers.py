"""The simulated world's customers: records with a contract tier and a site manager at each of their
sites, seeded again without change, and found by their number however a phone line spells it."""

from __future__ import annotations

import random

import phonenumbers

from core.customers import find_by_phone
from device_sim.customers import as_the_line_gives_it
from device_sim.simulated_fleet import CUSTOMERS, SITES_BY_NAME, build_fleet
from ironsight.schema import register_fleet
from ironsight.world import TIERS, customers_world, seed_customers


def test_each_customer_has_a_tier_and_a_site_manager_with_a_number_of_each_of_its_sites_countries():
    fleet = build_fleet(24, fault_share=0.0)
    customers = customers_world()
    assert [c.id for c in customers] == list(CUSTOMERS)
    assert {c.tier for c in customers} <= {t.name for t in TIERS}
    numbers = [contact.phone for c in customers for contact in c.contacts]
    assert len(set(numbers)) == len(numbers)
    # No one's number ends like another's: a number given without its country code finds one person.
    assert len({n[-8:] for n in numbers}) == len(numbers)
    for customer in customers:
        countries = {SITES_BY_NAME[s.site].country for s in fleet if s.customer == customer.id}
        assert 3 <= len(customer.contacts) <= 4  # its site managers and its fleet manager
        for contact in customer.contacts:
            number = phonenumbers.parse(contact.phone)
            assert phonenumbers.is_valid_number(number), contact
            assert phonenumbers.region_code_for_number(number) == contact.country
        assert {contact.country for contact in customer.contacts} == countries


def test_seeding_twice_changes_nothing_and_a_caller_is_found_however_the_line_spells_the_number(conn):
    seed_customers(conn)

    def snapshot():
        return (conn.execute("SELECT id, name, tier, contract_number FROM customers ORDER BY id").fetchall(),
                conn.execute("SELECT c.id, c.customer_id, c.name, p.e164 FROM customer_contacts c "
                             "JOIN contact_phones p ON p.contact_id = c.id ORDER BY c.id").fetchall(),
                conn.execute("SELECT tier, kind, respond_h, resolve_h FROM contract_tier_limits "
                             "ORDER BY tier, kind").fetchall())

    first = snapshot()
    register_fleet(conn, build_fleet(12, fault_share=0.0))  # the machines come later, as in a run
    seed_customers(conn)
    assert snapshot() == first
    customers, contacts, limits = first
    assert {tier for _, _, tier, _ in customers} == {"gold", "silver", "standard"}
    # A site manager per customer and site (12) and a fleet manager per customer (4).
    assert len(contacts) == 16 and {kind for _, kind, _, _ in limits} >= {"consultation", "complaint"}

    rng = random.Random(4)
    for contact_id, customer_id, _, e164 in contacts:
        for _ in range(4):
            spelled = as_the_line_gives_it(e164, "NL", rng)
            assert spelled != e164
            [best, *_] = find_by_phone(conn, spelled, "NL")
            assert (best.contact_id, best.customer_id) == (contact_id, customer_id), spelled
